"""Make state and kernel agree. From the state file alone, ``desired`` renders everything its
VMs need on the host (links in every namespace of ours, addresses, routes, sysctls, the nft
table's chains, policies, rules and elements, iptables rules, the uplink); ``Kernel`` reads the
same objects back. ``check`` reports every difference, per VM, per shared object, and the
orphans (objects tagged for this state file that no lease accounts for); ``restore`` applies the
missing part; ``gc`` removes the orphans and finishes or undoes half-made VMs. Only objects
carrying this state file's owner tag are ever removed; shared ones (a table, the shared
iptables rule, forwarding) only when no other state file's objects use them.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
from collections.abc import Callable

from fireroute import jsontext, owner
from fireroute.errors import KernelError, UsageError
from fireroute.kernel import observe
from fireroute.kernel.apply import read_sysctl
from fireroute.kernel.run import Runner, read_value, which
from fireroute.manager import FORWARD_BEFORE, FORWARD_RECORD, Manager, done
from fireroute.model import Vm
from fireroute.plan import bridge, clone, cni, host, iptables, modes, nft
from fireroute.plan.steps import IP, IPTABLES, Plan, Step, in_netns

COUNTER = "counter packets "


def _links(runner: Runner, netns: str | None = None) -> dict[str, dict]:
    res = runner(in_netns(netns, ["ip", "-j", "-d", "addr", "show"]), None)
    if res.rc != 0:
        raise KernelError(f"list links{f' in {netns}' if netns else ''}", res.err)
    docs = json.loads(res.out or "[]")
    return {str(d["ifname"]): d for d in docs if isinstance(d, dict) and "ifname" in d}


def parse_chains(listing: str) -> dict[str, tuple[str, list[str]]]:
    """``nft list table`` text -> {chain: (header, rules)}, counters' values left out."""
    out: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    header = ""
    rules: list[str] = []
    for raw in listing.splitlines():
        line = raw.strip()
        if current is None:
            if line.startswith("chain ") and line.endswith("{"):
                current, header, rules = line.split()[1], "", []
            continue
        if line == "}":
            out[current] = (header, rules)
            current = None
        elif line.startswith("type ") and not rules and not header:
            header = line
        elif line:
            rules.append(_uncounted(line))
    return out


def _uncounted(rule: str) -> str:
    while COUNTER in rule:  # "counter packets 3 bytes 180" -> "counter"
        at = rule.index(COUNTER)
        rest = rule[at + len(COUNTER) :].split(" ", 3)  # N bytes M rest
        rule = rule[:at] + "counter" + (" " + rest[3] if len(rest) > 3 else "")
    return rule


def _chains(
    runner: Runner, table: str, netns: str | None = None, family: str = "ip"
) -> dict | None:
    argv = ["nft", "list", "table", family, table]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    res = runner(argv, None)
    if res.rc != 0:
        if "No such file or directory" in res.err:
            return None
        raise KernelError(f'read nftables table "{table}"', res.err)
    return parse_chains(res.out)


class Kernel:
    """What the host holds: links (and, per clone namespace, what is inside it), our nft tables
    (chains and elements), tagged iptables rules, routes of the root namespace."""

    def __init__(self, runner: Runner, clones: list[Vm] = ()) -> None:  # type: ignore[assignment]
        self.runner = runner
        self.links = _links(runner)
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        """table -> set -> {element value (as nft text) -> comment}"""
        self.chains: dict[str, dict[str, tuple[str, list[str]]]] = {}
        if which("nft"):
            for table in observe.nft_our_tables(runner):
                self.tables[table] = observe.nft_elements(table, runner) or {}
                self.chains[table] = _chains(runner, table) or {}
        self.btables: dict[str, dict[str, dict[str, str]]] = {}
        """the anti-spoofing tables of bridge guests (``bridge`` family), as ``tables``"""
        self.bchains: dict[str, dict[str, tuple[str, list[str]]]] = {}
        if which("nft"):
            for table in observe.nft_our_tables(runner, bridge.FAMILY):
                self.btables[table] = observe.nft_elements(table, runner, bridge.FAMILY) or {}
                self.bchains[table] = _chains(runner, table, family=bridge.FAMILY) or {}
        self.rules: list[tuple[str, str]] = []
        if which("iptables-nft-save"):
            self.rules = [
                (t, line)
                for t, line in observe.iptables_saved(runner)
                if iptables.comment_tag(line)
            ]
        self.routes: set[str] = set()
        if any(v.mode == "clone" or v.delegated for v in clones):
            res = runner(["ip", "-j", "route", "show"], None)
            if res.rc == 0:
                self.routes = {
                    f"{r.get('dst')} via {r.get('gateway')} dev {r.get('dev')}"
                    for r in json.loads(res.out or "[]")
                    if isinstance(r, dict)
                }
        self.ns: dict[str, Namespace] = {}
        self.cni: dict[str, Attachment] = {}
        """per CNI attachment's namespace path (one that exists): what is inside it"""
        for vm in clones:
            if (
                vm.mode == "clone"
                and vm.netns
                and os.path.exists(f"{observe.NETNS_DIR}/{vm.netns}")
            ):
                self.ns[vm.netns] = Namespace(runner, vm.netns)
            elif vm.mode == "cni" and vm.netns and observe.netns_alive(vm.netns):
                self.cni[vm.netns] = Attachment(runner, vm)


class Namespace:
    """One clone namespace from inside: links, routes, forwarding, its NAT table."""

    def __init__(self, runner: Runner, name: str) -> None:
        self.links = _links(runner, name)
        res = runner(["ip", "-n", name, "-j", "route", "show"], None)
        self.routes = json.loads(res.out or "[]") if res.rc == 0 else []
        res = runner(["ip", "netns", "exec", name, "sysctl", "-n", host.FORWARD_KEY], None)
        self.forwarding = res.out.strip() if res.rc == 0 else "?"
        self.chains = _chains(runner, clone.NS_TABLE, name)


class Attachment:
    """A CNI attachment's namespace from inside: its links, and the tc filters on the ingress
    of the veth and the tap (one ``tc -batch``: a JSON list per device)."""

    def __init__(self, runner: Runner, vm: Vm) -> None:
        assert vm.netns is not None
        self.links = _links(runner, vm.netns)
        self.filters: dict[str, list[dict]] = {}
        devs = [src for src, _ in cni.redirects(vm) if src in self.links]
        if not devs:
            return
        lines = "".join(f"filter show dev {d} ingress\n" for d in devs)
        res = runner(in_netns(vm.netns, ["tc", "-j", "-force", "-batch", "-"]), lines)
        try:  # a JSON list per device, in order (a device that vanished prints none)
            docs = jsontext.loads_all(res.out)
        except ValueError:
            docs = []
        for dev, doc in zip(devs, docs, strict=False):
            self.filters[dev] = (
                [f for f in doc if isinstance(f, dict)] if isinstance(doc, list) else []
            )

    def redirects(self, dev: str) -> list[str]:
        """The devices ``dev``'s ingress redirects to."""
        return [
            str(a.get("to_dev"))
            for f in self.filters.get(dev, [])
            for a in (f.get("options", {}) or {}).get("actions", []) or []
            if a.get("kind") == "mirred" and a.get("mirred_action") == "redirect"
        ]


def cni_problems(k: Kernel, vm: Vm) -> list[str]:
    """Inside a CNI attachment's namespace: the veth, the tap, the two redirects, the MTU."""
    assert vm.netns is not None
    att = k.cni.get(vm.netns)
    if att is None and vm.tap in k.links:
        return [f'network namespace "{vm.netns}" cannot be opened from here']
    if att is None:
        return [
            f'network namespace "{vm.netns}" is gone (its runtime removed it: the CNI DEL or '
            '"fireroute gc" removes this attachment)'
        ]
    where = f'in "{vm.netns}"'
    veth, alias = str(vm.options.ifname), host.owner_alias(vm)
    problems = link_problems(
        att.links.get(veth),
        veth,
        f"veth {where}:",
        {"kind": "veth", "alias": alias, "mac": cni.mac(vm, "veth")},
    )
    tap_want = {**_tap_want(vm), "kind": "tun", "alias": alias, "mac": cni.mac(vm, "tap")}
    tap_want.pop("address", None)
    problems += link_problems(att.links.get(vm.vm_tap), vm.vm_tap, f"tap {where}:", tap_want)
    for src, dst in cni.redirects(vm):
        if src not in att.links:
            continue
        got = att.redirects(src)
        if dst not in got:
            problems.append(f'"{src}" {where} does not redirect to "{dst}"')
        for other in sorted(set(got) - {dst}):
            problems.append(f'"{src}" {where} has a foreign redirect to "{other}"')
    if vm.options.mtu:
        for dev, link in ((veth, att.links.get(veth)), (vm.vm_tap, att.links.get(vm.vm_tap))):
            if link is not None and link.get("mtu") != vm.options.mtu:
                problems.append(f'"{dev}" {where} has mtu {link.get("mtu")}, not {vm.options.mtu}')
    return problems


def _addrs(link: dict) -> set[str]:
    return {
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    }


def _user(uid: int | None, by_group: bool = False) -> str | None:
    if uid is None:
        return None
    try:
        return grp.getgrgid(uid).gr_name if by_group else pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def link_problems(link: dict | None, dev: str, what: str, want: dict) -> list[str]:
    """Differences between one observed link and what it should be: ``want`` may hold
    address, master, alias, kind (tun, veth, bridge), user/group (tap owner)."""
    if link is None:
        return [f'{what} "{dev}" is missing']
    problems = []
    info = link.get("linkinfo", {}) or {}
    kind = info.get("info_kind")
    if want.get("kind") and kind != want["kind"]:
        return [f'"{dev}" is a {kind or "plain"} link, not a {want["kind"]}']
    if want.get("mac") and str(link.get("address", "")).upper() != want["mac"]:
        problems.append(f'{what} "{dev}" has MAC {link.get("address")}, not {want["mac"]}')
    if want.get("address") and want["address"] not in _addrs(link):
        problems.append(f'"{dev}" lacks address {want["address"]}')
    if "master" in want and link.get("master") != want["master"]:
        problems.append(f'{what} "{dev}" is not attached to bridge "{want["master"]}"')
    if "UP" not in link.get("flags", []):
        problems.append(f'{what} "{dev}" is down')
    if want.get("alias") and link.get("ifalias") != want["alias"]:
        problems.append(f'{what} "{dev}" does not carry owner tag {want["alias"]}')
    data = info.get("info_data", {}) or {}
    if "user" in want and data.get("user") != want["user"]:
        problems.append(
            f'tap "{dev}" is owned by {data.get("user", "nobody")}, not {want["user"]} '
            "(any local user could attach to an unowned tap)"
        )
    if want.get("group") and data.get("group") != want["group"]:
        problems.append(f'tap "{dev}" has group {data.get("group", "none")}, not {want["group"]}')
    return problems


def _tap_want(vm: Vm) -> dict:
    o = vm.options.owner
    want = {
        "kind": "tun",
        "alias": host.owner_alias(vm),
        "user": _user(o.uid if o else 0),
    }
    if o and o.gid is not None:
        want["group"] = _user(o.gid, by_group=True)
    if vm.mode == "nat":
        want["address"] = f"{vm.tap_ip}/{vm.prefix}"
    if vm.mode == "bridge":
        want["master"] = vm.options.bridge
    return want


def _localnet_on(dev: str) -> bool:
    return read_value(f"/proc/sys/net/ipv4/conf/{dev}/route_localnet") == "1"


def _ipv6_on(dev: str) -> bool:
    return read_value(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6") != "1"


def expected_elements(vm: Vm) -> dict[str, list[str]]:
    """The set elements a VM should have in the shared NAT table, as nft text: its own, and
    a masquerading bridge guest's shared (bridge . uplink) egress element."""
    if not modes.nat_member(vm):
        return {}
    out = nft.elements(vm)
    if modes.masquerading_bridge(vm):
        out["egress"] = [f'"{vm.options.bridge}" . "{vm.uplink}"']
    return out


def _ipt_want(vm: Vm) -> set[str]:
    """The iptables rules (as iptables-nft-save prints them, quotes left out) a VM needs."""
    want = {r for _, r in iptables.vm_rules(vm)} if vm.backend == "iptables" else set()
    if vm.options.fix_forward_policy:  # inserted with -I, saved as -A
        want |= {"-A " + s.text.split(" ", 1)[1] for s in iptables.forward_policy_fix([vm])}
    return want


def clone_problems(k: Kernel, vm: Vm) -> list[str]:
    """Inside the clone's namespace, and the host route to an explicit clone address."""
    assert vm.net is not None and vm.netns is not None
    ns = k.ns.get(vm.netns)
    if ns is None:
        return [f'namespace "{vm.netns}" is missing']
    guest = vm.guest_iface_addr
    assert guest is not None
    host_ip, ns_ip = vm.net.network_address + 1, vm.net.network_address + 2
    problems = link_problems(
        ns.links.get(vm.vm_tap),
        vm.vm_tap,
        "tap",
        {
            "kind": "tun",
            "address": f"{vm.tap_ip}/{guest.network.prefixlen}",
            "user": _tap_want(vm)["user"],
        },
    )
    problems += link_problems(
        ns.links.get(clone.NS_VETH),
        clone.NS_VETH,
        f"veth in {vm.netns}:",
        {"kind": "veth", "address": f"{ns_ip}/{vm.net.prefixlen}"},
    )
    if not any(r.get("dst") == "default" and r.get("gateway") == str(host_ip) for r in ns.routes):
        problems.append(f'namespace "{vm.netns}" has no default route via {host_ip}')
    if ns.forwarding != "1":
        problems.append(f'IPv4 forwarding is off in namespace "{vm.netns}"')
    problems += chain_problems(f"ip {clone.NS_TABLE} in {vm.netns}", ns.chains, clone.ns_chains(vm))
    if vm.clone_address != ns_ip:
        route = f"{vm.clone_address} via {ns_ip} dev {vm.tap}"
        if route not in k.routes:
            problems.append(f"host route {route} is missing")
    return problems


def chain_problems(
    where: str, have: dict | None, want: dict[str, tuple[str, list[str]]]
) -> list[str]:
    """Differences between a table's chains as listed and as fireroute renders them."""
    if have is None:
        return [f"nftables table {where} is missing"]
    problems = []
    for name, (header, rules) in want.items():
        if name not in have:
            problems.append(f"chain {name} of {where} is missing")
            continue
        got_header, got_rules = have[name]
        if got_header != header:
            problems.append(
                f'chain {name} of {where} is "{got_header or "a regular chain"}", '
                f'not "{header or "a regular chain"}"'
            )
        if got_rules != rules:
            missing = [r for r in rules if r not in got_rules]
            extra = [r for r in got_rules if r not in rules]
            detail = "; ".join(
                [f'lacks "{r}"' for r in missing] + [f'has foreign rule "{r}"' for r in extra]
            )
            problems.append(f"chain {name} of {where}: {detail or 'rules out of order'}")
    for name in sorted(set(have) - set(want)):
        problems.append(f"chain {name} of {where} is not fireroute's")
    return problems


def drift(k: Kernel, vm: Vm) -> list[str]:
    """Every difference between what ``vm`` needs and what the kernel holds."""
    problems: list[str] = []
    if vm.mode == "clone":
        problems += veth_problems(k, vm) + clone_problems(k, vm)
    elif vm.mode == "cni":
        problems += veth_problems(k, vm) + cni_problems(k, vm)
    else:
        problems += link_problems(k.links.get(vm.tap), vm.tap, "tap", _tap_want(vm))
    if vm.mode in ("nat", "cni") and vm.tap in k.links and _ipv6_on(vm.tap):
        kind = "tap" if vm.mode == "nat" else "veth"
        problems.append(f'IPv6 is on for {kind} "{vm.tap}" (guests could reach the host over it)')
    if host.localnet(vm) and vm.tap in k.links and not _localnet_on(vm.tap):
        problems.append(
            f'route_localnet is off on "{vm.tap}" (its 127.0.0.1 ports cannot reach the guest)'
        )
    if vm.mode == "bridge" and str(vm.options.bridge) not in k.links:
        problems.append(f'bridge "{vm.options.bridge}" is missing')
    if vm.state != "active":
        problems.append(f"lease is {vm.state} (an interrupted run; gc finishes it)")
    if modes.uses_uplink(vm) and vm.uplink not in k.links:
        problems.append(f'uplink "{vm.uplink}" is missing (renamed or gone)')
    if not modes.nat_member(vm):
        pass
    elif vm.backend == "nft":
        sets = k.tables.get(vm.table)
        if sets is None:
            problems.append(f'nftables table "{vm.table}" is missing')
        else:
            for name, vals in expected_elements(vm).items():
                for val in vals:
                    if val not in sets.get(name, {}):
                        problems.append(f"nft set {vm.table}/{name} lacks {val}")
    if vm.mode == "bridge":
        sets = k.btables.get(vm.table)
        if sets is None:
            problems.append(f'nftables table "bridge {vm.table}" is missing')
        else:
            for name, vals in bridge.filter_elements(vm).items():
                for val in vals:
                    if val not in sets.get(name, {}):
                        problems.append(f"nft set bridge {vm.table}/{name} lacks {val}")
    if modes.nat_member(vm) and (vm.backend == "iptables" or vm.options.fix_forward_policy):
        have = {line.replace('"', "") for _, line in k.rules}
        for rule in sorted(_ipt_want(vm)):
            if rule not in have:
                problems.append(f"iptables rule missing: {rule}")
    return problems


def shared_problems(k: Kernel, vms: list[Vm]) -> dict[str, list[str]]:
    """Objects the VMs share: each nft table's chains and rules, the shared iptables rule."""
    out: dict[str, list[str]] = {}
    for table in sorted({v.table for v in vms if v.backend == "nft" and modes.nat_member(v)}):
        if table in k.chains:
            found = chain_problems(f"ip {table}", k.chains[table], nft.chains())
            found += [
                f"set {s} of ip {table} is missing" for s in nft.SETS if s not in k.tables[table]
            ]
            out[f"nftables table ip {table}"] = found
    for table in sorted({v.table for v in vms if v.mode == "bridge"}):
        if table in k.bchains:
            found = chain_problems(f"bridge {table}", k.bchains[table], bridge.filter_chains())
            found += [
                f"set {s} of bridge {table} is missing"
                for s in bridge.FILTER_SETS
                if s not in k.btables[table]
            ]
            out[f"nftables table bridge {table}"] = found
    if any(v.backend == "iptables" and modes.nat_member(v) for v in vms):
        have = {line.replace('"', "") for _, line in k.rules}
        out["iptables"] = (
            []
            if iptables.CONNTRACK in have
            else [f"shared iptables rule missing: {iptables.CONNTRACK}"]
        )
    return out


def orphans(k: Kernel, vms: list[Vm], instance: str) -> list[str]:
    """Objects tagged for this state file that no lease accounts for."""
    known = {v.name: v for v in vms}
    found = []
    bridges = {str(v.options.bridge) for v in vms if v.mode == "bridge"}
    for name, link in k.links.items():
        tag = owner.parse(str(link.get("ifalias", "")))
        if tag is None or tag[0] != instance:
            continue
        what = tag[1]
        if what.startswith(owner.BRIDGE):
            if what[len(owner.BRIDGE) :] not in bridges:
                found.append(f'link "{name}" (a bridge of this state file) has no vm')
        elif what not in known or known[what].tap != name:
            found.append(f'link "{name}" tagged for vm "{what}" has no lease')
    for ns in observe.our_namespaces(instance):
        if ns not in {v.netns for v in vms if v.netns}:
            found.append(f'namespace "{ns}" has no lease')

    def nat_ok(table: str, set_name: str, val: str, name: str) -> bool:
        if name.startswith(owner.BRIDGE):  # a masquerading bridge's shared egress element
            return any(v.table == table and modes.masquerading_bridge(v) for v in vms)
        vm = known.get(name)
        return (
            vm is not None
            and vm.backend == "nft"
            and vm.table == table
            and val in expected_elements(vm).get(set_name, [])
        )

    def bridge_ok(table: str, set_name: str, val: str, name: str) -> bool:
        vm = known.get(name)
        return (
            vm is not None
            and vm.mode == "bridge"
            and vm.table == table
            and val in bridge.filter_elements(vm).get(set_name, [])
        )

    found += _orphan_elements("ip", k.tables, instance, nat_ok, set(known))
    found += _orphan_elements(bridge.FAMILY, k.btables, instance, bridge_ok, set(known))
    for _, line in k.rules:
        tag = owner.parse(iptables.comment_tag(line) or "")
        if tag is None or tag[0] != instance:
            continue
        vm = known.get(tag[1])
        if vm is None or line.replace('"', "") not in _ipt_want(vm):
            found.append(f"iptables rule has no lease: {line}")
    return found


def _orphan_elements(
    family: str,
    tables: dict[str, dict[str, dict[str, str]]],
    instance: str,
    accounted: Callable[[str, str, str, str], bool],
    leased: set[str],
) -> list[str]:
    """Elements tagged for this state file that ``accounted(table, set, value, name)``
    finds no lease for (or that the lease of the vm they name, in ``leased``, does not
    expect there: left by an older fireroute whose table layout differed, say)."""
    found = []
    for table, sets in tables.items():
        for set_name, elems in sets.items():
            for val, comment in elems.items():
                tag = owner.parse(comment)
                ours = tag is not None and tag[0] == instance
                if ours and not accounted(table, set_name, val, tag[1]):  # type: ignore[index]
                    why = (
                        f'is not where vm "{tag[1]}" has it'  # type: ignore[index]
                        if tag[1] in leased  # type: ignore[index]
                        else "has no lease"
                    )
                    found.append(f"element {val} of set {family} {table} {set_name} {why}")
    return found


class Report:
    __slots__ = ("vms", "shared", "orphans")

    def __init__(self) -> None:
        self.vms: dict[str, list[str]] = {}
        self.shared: dict[str, list[str]] = {}
        self.orphans: list[str] = []

    def ok(self) -> bool:
        return not (any(self.vms.values()) or any(self.shared.values()) or self.orphans)

    def as_json(self) -> dict[str, object]:
        """What ``check --json`` prints."""
        return {"ok": self.ok(), "vms": self.vms, "shared": self.shared, "orphans": self.orphans}


def check(m: Manager, names: list[str]) -> Report:
    # reading the ruleset needs CAP_NET_ADMIN: without it nothing true could be said
    observe.require_net_admin("check fireroute's networking")
    store = m._store(create=False)
    everything = store.all()
    vms = everything if not names else [m.show(n) for n in dict.fromkeys(names)]
    k = Kernel(m.runner, vms)
    report = Report()
    report.vms = {vm.name: drift(k, vm) for vm in vms}
    if vms and read_sysctl(host.FORWARD_KEY) != "1":
        for vm in vms:
            report.vms[vm.name].append("IPv4 forwarding is off")
    report.shared = shared_problems(k, vms)
    if not names:
        report.orphans = orphans(k, everything, store.instance())
    return report


def gone(vm: Vm) -> bool:
    """Is a CNI attachment's namespace gone? Its path is no namespace (here) and the host end
    of its veth went with it: a path this mount namespace cannot see (a runtime's private
    /run) while the veth is there is no proof of anything."""
    from fireroute.kernel import netlink

    return (
        vm.mode == "cni"
        and not observe.netns_alive(str(vm.netns))
        and not netlink.link_exists(vm.tap)
    )


def gc(m: Manager, dry_run: bool = False, instance: str | None = None) -> Plan:
    """Finish half-made VMs (pending/removing leases are taken down) and remove every object
    tagged for this state file that no active lease accounts for. ``instance`` names another
    state file's id instead (a state file that was lost: none of its objects has a lease)."""
    observe.require_net_admin("collect fireroute's leftovers")
    if instance is not None and (len(instance) > 16 or not set(instance) <= owner.HEX):
        raise UsageError(f'invalid state id "{instance}": expected the hex id of a state file')
    store = m._store(create=False)
    with store.locked():
        adopted = instance is not None and instance != store.instance()
        instance = instance or store.instance()
        # half-made VMs, and CNI attachments whose namespace the runtime removed (a crashed
        # VM, a DEL that never came): both are taken down
        half = [] if adopted else [v for v in store.all() if v.state != "active" or gone(v)]
        plan = m._down_plan(store, half) if half else Plan()
        if half and not dry_run:
            m.executor().apply_best_effort(plan)
            store.remove([v.name for v in half])
        active = {} if adopted else {v.name: v for v in store.all()}
        k = Kernel(m.runner)
        sweep = Plan()
        bridges = {str(v.options.bridge) for v in active.values() if v.mode == "bridge"}
        unused_bridges, leftover = [], set()
        for name, link in k.links.items():
            tag = owner.parse(str(link.get("ifalias", "")))
            if tag is None or tag[0] != instance:
                continue  # not ours, or another state file's
            what = tag[1]
            if what.startswith(owner.BRIDGE):
                if what[len(owner.BRIDGE) :] not in bridges:
                    unused_bridges.append(name)
            elif what not in active or active[what].tap != name:
                leftover.add(name)
                sweep.add(Step(IP, f"link del dev {name}", f'delete leftover link "{name}"'))
        for name in unused_bridges:  # ours, no vm on it, and nothing else attached
            if not set(observe.bridge_ports(name, m.runner)) - leftover:
                sweep.add(bridge.delete_bridge(name))
        clone_ns = {v.netns for v in active.values() if v.netns}
        for ns in observe.our_namespaces(instance):
            if ns not in clone_ns:
                sweep.add(Step(IP, f"netns del {ns}", f'delete leftover namespace "{ns}"'))
        sweep.add(
            *nft.sweep_tables(
                "ip",
                k.tables,
                [v for v in active.values() if v.backend == "nft" and modes.nat_member(v)],
                expected_elements,
                instance,
            ),
            *nft.sweep_tables(
                bridge.FAMILY,
                k.btables,
                [v for v in active.values() if v.mode == "bridge"],
                bridge.filter_elements,
                instance,
            ),
        )
        wanted = set().union(*(_ipt_want(v) for v in active.values())) if active else set()
        others = False
        for table, line in k.rules:
            tag_text = iptables.comment_tag(line) or ""
            tag = owner.parse(tag_text)
            if tag_text == owner.SHARED:
                continue
            if tag is None or tag[0] != instance:
                others = True
            elif line.replace('"', "") not in wanted:
                sweep.add(
                    Step(IPTABLES, "-D" + line[2:], "remove leftover iptables rule", table=table)
                )
        ipt_active = any(v.backend == "iptables" for v in active.values())
        if not ipt_active and not others:
            for table, line in k.rules:
                if iptables.comment_tag(line) == owner.SHARED:
                    sweep.add(
                        Step(IPTABLES, "-D" + line[2:], "remove shared iptables rule", table=table)
                    )
        if not active:
            sweep.add(*m.forwarding_back(store, instance, set(), own=not adopted))
            sweep.forget.append(FORWARD_RECORD)
        if not dry_run:
            m.executor().apply_best_effort(sweep)
            done(sweep)
            if not active and not adopted:
                store.remove([], drop_meta=[FORWARD_BEFORE])
        plan.add(*sweep.steps)
        return plan


def restore(m: Manager, dry_run: bool = False) -> Plan:
    """Recreate what active leases need and the kernel lacks (after a reboot, or drift): taps,
    addresses, owners, clone namespaces and what is inside them, routes, the nft table's
    chains, rules and elements, iptables rules, forwarding. Nothing present and right is
    touched, so a second run does nothing."""
    observe.require_net_admin("restore fireroute's networking")
    store = m._store(create=False)
    with store.locked():
        vms = [v for v in store.all() if v.state == "active"]
        k = Kernel(m.runner, vms)
        plan = Plan()
        clear: list[Step] = []  # what is left of a drifted clone: removed first, best effort
        for vm in vms:
            steps = _restore_links(k, vm, clear)
            plan.add(*steps)
            made = any(s.text.endswith("/route_localnet=1") for s in steps)
            if host.localnet(vm) and not made and not _localnet_on(vm.tap):
                plan.add(host.route_localnet(vm))
        if clear and not dry_run:
            m.executor().apply_best_effort(Plan(clear), count_faults=False)
        forwarding = read_sysctl(host.FORWARD_KEY)
        if vms and forwarding != "1":
            plan.add(host.set_forwarding("1", forwarding))
            if not dry_run:  # (after a reboot: forwarding and /run both start afresh)
                from fireroute.kernel import forwarding as record

                record.record(forwarding)
        members = [v for v in vms if modes.nat_member(v)]
        shared = shared_problems(k, vms)
        for table in sorted({v.table for v in members if v.backend == "nft"}):
            in_table = [v for v in members if v.backend == "nft" and v.table == table]
            if table not in k.tables:
                observe.check_table_owner(table, m.runner)
            broken = table not in k.tables or shared.get(f"nftables table ip {table}")
            missing = any(
                val not in k.tables.get(table, {}).get(s, {})
                for v in in_table
                for s, vals in expected_elements(v).items()
                for val in vals
            )
            if broken or missing:
                bridges = {
                    (str(v.options.bridge), v.uplink, v.owner)
                    for v in in_table
                    if modes.masquerading_bridge(v)
                }
                extra = sorted(set(k.chains.get(table, {})) - set(nft.CHAINS))
                fix = nft.heal(table, in_table, bridges)
                # this state file's elements that no lease expects where they are (an older
                # fireroute's layout: a tap's policy pair moved) go first, in the same
                # transaction: a verdict map entry of the old place would refuse the new one
                stale = nft.sweep_tables(
                    "ip",
                    {table: k.tables.get(table, {})},
                    in_table,
                    expected_elements,
                    store.instance(),
                )
                fix.text = "".join(s.text for s in stale) + fix.text
                if extra:  # chains someone added to our table: flushed and deleted
                    fix.text += "".join(
                        f"flush chain ip {table} {c}\ndelete chain ip {table} {c}\n" for c in extra
                    )
                plan.add(fix)
        for table in sorted({v.table for v in vms if v.mode == "bridge"}):
            in_table = [v for v in vms if v.mode == "bridge" and v.table == table]
            if table not in k.btables:
                observe.check_table_owner(table, m.runner, bridge.FAMILY)
            broken = table not in k.btables or shared.get(f"nftables table bridge {table}")
            missing = any(
                val not in k.btables.get(table, {}).get(s, {})
                for v in in_table
                for s, vals in bridge.filter_elements(v).items()
                for val in vals
            )
            if broken or missing:
                plan.add(bridge.filter_heal(table, in_table))
        ipt = [v for v in members if v.backend == "iptables" or v.options.fix_forward_policy]
        if ipt:
            have = {line.replace('"', "") for _, line in k.rules}
            steps = []
            if any(v.backend == "iptables" for v in ipt):
                steps += iptables.vms_up(
                    [v for v in ipt if v.backend == "iptables"],
                    need_conntrack=iptables.CONNTRACK not in have,
                )
            steps += iptables.forward_policy_fix([v for v in ipt if v.options.fix_forward_policy])
            for step in steps:
                rule = "-A " + step.text.split(" ", 1)[1]
                if rule not in have:
                    plan.add(step)
        if not dry_run and plan:
            m.executor().apply_all(plan)
        return Plan(clear + plan.steps)  # everything restore ran (or, dry, would run)


def _restore_links(k: Kernel, vm: Vm, clear: list[Step]) -> list[Step]:
    """Steps making one VM's links right again (``clear`` gets what must go first)."""
    if vm.mode == "clone":
        if not drift_links(k, vm):
            return []
        clear.extend(clone.down(vm))  # whatever is left of it goes first: it is made again whole
        return modes.links_up([vm], set())
    if vm.mode == "cni":
        if not drift_links(k, vm):
            return []
        if vm.netns not in k.cni:  # the runtime's namespace is gone: nothing to make it in
            raise UsageError(
                f'vm "{vm.name}": network namespace "{vm.netns}" is gone; the CNI DEL or '
                '"fireroute gc" removes the attachment'
            )
        clear.extend(cni.down(vm))
        return modes.links_up([vm], set())
    link = k.links.get(vm.tap)
    want = _tap_want(vm)
    if link is not None and any("owned by" in p for p in link_problems(link, vm.tap, "tap", want)):
        steps = host.tap_down(vm)  # a tap's owner is set only when it is made
        link = None
    else:
        steps = []
    if vm.mode == "bridge":
        br = str(vm.options.bridge)
        if br not in k.links:  # the bridge itself went: ours again, as before
            steps += bridge.create_bridge(vm)
            k.links[br] = {"flags": ["UP"]}
        if link is None:
            return steps + bridge.tap_up(vm)
        if link_problems(link, vm.tap, "tap", want):
            steps.append(bridge.tap_up(vm)[1])  # re-attach, re-tag, bring up
        return steps
    create, address, bring_up = host.tap_up(vm)
    if link is None:
        return [*steps, create, address, bring_up, host.ipv6_off(vm)]
    if link_problems(link, vm.tap, "tap", want):
        if want["address"] not in _addrs(link):
            steps.append(address)
        steps.append(bring_up)
    if _ipv6_on(vm.tap):
        steps.append(host.ipv6_off(vm))
    return steps


def veth_problems(k: Kernel, vm: Vm) -> list[str]:
    """The host end of a clone's or a CNI attachment's veth link."""
    assert vm.net is not None
    want = {
        "kind": "veth",
        "address": f"{vm.net.network_address + 1}/{vm.net.prefixlen}",
        "alias": host.owner_alias(vm),
    }
    if vm.mode == "cni":
        want["mac"] = cni.mac(vm, "host")
        want["address"] = cni.host_address(vm)
    problems = link_problems(k.links.get(vm.tap), vm.tap, "veth", want)
    if vm.delegated and f"{vm.guest_ip} via None dev {vm.tap}" not in k.routes:
        problems.append(f"host route {vm.guest_ip}/32 dev {vm.tap} is missing")
    link = k.links.get(vm.tap)
    if (
        vm.mode == "cni"
        and vm.options.mtu
        and link is not None
        and link.get("mtu") != vm.options.mtu
    ):
        problems.append(f'veth "{vm.tap}" has mtu {link.get("mtu")}, not {vm.options.mtu}')
    return problems


def drift_links(k: Kernel, vm: Vm) -> bool:
    """Does anything of a clone's or CNI attachment's links, namespace or route differ?"""
    if vm.mode == "cni":
        return bool(veth_problems(k, vm) or cni_problems(k, vm))
    return bool(veth_problems(k, vm) or clone_problems(k, vm))
