"""Each object compared with what the state file's VMs need: a list of problems, in words
``check`` prints."""

from __future__ import annotations

from collections.abc import Callable

from fireroute.model import Vm
from fireroute.plan import bridge, modes, nft
from fireroute.repair import extras, order
from fireroute.repair.read import Kernel
from fireroute.want import clone as wanted_clone
from fireroute.want import cni as wanted_cni
from fireroute.want import iptables as wanted_ipt
from fireroute.want import nft as nft_want
from fireroute.want import tap as wanted_tap
from fireroute.want.netns import Route
from fireroute.want.objects import FORWARD_KEY, Addr, Link, Sysctl


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
    veth, tun = wanted_cni.veth(vm), wanted_cni.tun(vm)
    have: dict[str, Link | None] = {link.name: att.links.get(link.name) for link in (veth, tun)}
    problems = link_problems(
        have[veth.name],
        veth.name,
        f"veth {where}:",
        {"kind": veth.link_kind, "alias": veth.alias, "mac": veth.mac},
    )
    tap = {**tap_want(vm), "kind": tun.link_kind, "alias": tun.alias, "mac": tun.mac}
    problems += link_problems(have[tun.name], tun.name, f"tap {where}:", tap)
    for r in wanted_cni.redirects(vm):
        if r.src not in att.links:
            continue
        got = att.redirects(r.src)
        if r.dst not in got:
            problems.append(f'"{r.src}" {where} does not redirect to "{r.dst}"')
        for other in sorted(set(got) - {r.dst}):
            problems.append(f'"{r.src}" {where} has a foreign redirect to "{other}"')
    for link in (veth, tun):
        problems += mtu_problems(have[link.name], link, f'"{link.name}" {where}')
    return problems


def mtu_problems(have: Link | None, link: Link, who: str) -> list[str]:
    """A link whose MTU fireroute fixes (a CNI attachment's), found with another."""
    if link.mtu and have is not None and have.mtu != link.mtu:
        return [f"{who} has mtu {have.mtu}, not {link.mtu}"]
    return []


def _owner(uid: int | None) -> str:
    return "nobody" if uid is None else f"uid {uid}"


def link_problems(
    link: Link | None,
    dev: str,
    what: str,
    want: dict,
    addrs: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    """Differences between one link as read and what it should be: ``want`` may hold
    address (one of ``addrs``, the link's), master, alias, kind (tun, veth, bridge), mac,
    uid/gid (a tap's owner)."""
    if link is None:
        return [f'{what} "{dev}" is missing']
    problems = []
    if want.get("kind") and link.link_kind != want["kind"]:
        return [f'"{dev}" is a {link.link_kind or "plain"} link, not a {want["kind"]}']
    if want.get("mac") and link.mac != want["mac"]:
        problems.append(f'{what} "{dev}" has MAC {str(link.mac).lower()}, not {want["mac"]}')
    if want.get("address") and want["address"] not in addrs:
        problems.append(f'"{dev}" lacks address {want["address"]}')
    if "master" in want and link.master != want["master"]:
        problems.append(f'{what} "{dev}" is not attached to bridge "{want["master"]}"')
    if not link.up:
        problems.append(f'{what} "{dev}" is down')
    if want.get("alias") and link.alias != want["alias"]:
        problems.append(f'{what} "{dev}" does not carry owner tag {want["alias"]}')
    if "uid" in want and link.uid != want["uid"]:
        problems.append(
            f'tap "{dev}" is owned by {_owner(link.uid)}, not {_owner(want["uid"])} '
            "(any local user could attach to an unowned tap)"
        )
    if want.get("gid") is not None and link.gid != want["gid"]:
        got = "none" if link.gid is None else link.gid
        problems.append(f'tap "{dev}" has group {got}, not {want["gid"]}')
    return problems


def tap_want(vm: Vm) -> dict:
    """What ``link_problems`` compares of a VM's tap, from ``want.tap``'s objects; of a
    clone's or CNI attachment's tap, only its owner and kind are taken from here."""
    link = wanted_tap.link(vm)
    objs = wanted_tap.tap(vm) if vm.mode in wanted_tap.MODES else [link]
    want: dict[str, object] = {"kind": link.link_kind, "alias": link.alias, "uid": link.uid}
    if link.gid is not None:
        want["gid"] = link.gid
    for a in objs:
        if isinstance(a, Addr):
            want["address"] = a.cidr
    if link.master is not None:
        want["master"] = link.master
    return want


def localnet_on(k: Kernel, dev: str) -> bool:
    return k.sysctl(f"net/ipv4/conf/{dev}/route_localnet") == "1"


def ipv6_on(k: Kernel, dev: str) -> bool:
    return k.sysctl(f"net/ipv6/conf/{dev}/disable_ipv6") != "1"


def expected_elements(vm: Vm) -> dict[str, list[str]]:
    """The set elements a VM should have in the shared NAT table, as nft text: its own, and
    a masquerading bridge guest's shared (bridge . uplink) egress element."""
    return nft_want.by_set(nft_want.nat_elements(vm))


Expected = Callable[[Vm], dict[str, list[str]]]


def remembered() -> Expected:
    """``expected_elements``, worked out once per VM for one command: a VM with a public
    egress policy costs ~0.5 ms (its CIDRs merged), and the orphan sweep asks per element."""
    memo: dict[int, tuple[Vm, dict[str, list[str]]]] = {}

    def expected(vm: Vm) -> dict[str, list[str]]:
        hit = memo.get(id(vm))
        if hit is None or hit[0] is not vm:  # (the VM is kept: its id stays its own)
            hit = memo[id(vm)] = (vm, expected_elements(vm))
        return hit[1]

    return expected


def ipt_want(vm: Vm) -> set[str]:
    """The iptables rules (as iptables-nft-save prints them, quotes left out) a VM needs."""
    return {r.saved for r in wanted_ipt.rules(vm)}


def clone_problems(k: Kernel, vm: Vm) -> list[str]:
    """Inside the clone's namespace, and the host route to an explicit clone address: what
    ``want.clone`` says is there."""
    ns_name = vm.netns
    assert ns_name is not None
    ns = k.ns.get(ns_name)
    if ns is None:
        return [f'namespace "{ns_name}" is missing']
    objs = wanted_clone.clone(vm)
    want = {(o.kind, o.key): o for o in objs}
    tun, far = want["link", (ns_name, vm.vm_tap)], want["link", (ns_name, wanted_clone.NS_VETH)]
    addr = {a.dev: a.cidr for a in objs if isinstance(a, Addr) and a.ns == ns_name}
    assert isinstance(tun, Link) and isinstance(far, Link)
    problems = link_problems(
        ns.links.get(tun.name),
        tun.name,
        "tap",
        {"kind": tun.link_kind, "address": addr[tun.name], "uid": tun.uid},
        ns.addrs(tun.name),
    )
    problems += link_problems(
        ns.links.get(far.name),
        far.name,
        f"veth in {ns_name}:",
        {"kind": far.link_kind, "address": addr[far.name]},
        ns.addrs(far.name),
    )
    default = want["route", (ns_name, "default")]
    assert isinstance(default, Route)
    if not any(r.dst == "default" and r.via == default.via for r in ns.routes):
        problems.append(f'namespace "{ns_name}" has no default route via {default.via}')
    forwarding = want["sysctl", (ns_name, FORWARD_KEY)]
    assert isinstance(forwarding, Sysctl)
    if ns.forwarding != forwarding.value:
        problems.append(f'IPv4 forwarding is off in namespace "{ns_name}"')
    chains = {c.name: (c.header, list(c.rules)) for c in wanted_clone.chains(vm)}
    problems += chain_problems(f"ip {wanted_clone.NS_TABLE} in {ns_name}", ns.chains, chains)
    for route in objs:
        if isinstance(route, Route) and route.ns is None and route.shown() not in k.routes:
            problems.append(f"host route {route.shown()} is missing")
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


def shared_problems(k: Kernel, vms: list[Vm]) -> dict[str, list[str]]:
    """Objects the VMs share: each nft table's chains and rules, the shared iptables rule."""
    out: dict[str, list[str]] = {}
    for table in sorted({v.table for v in vms if v.backend == "nft" and modes.nat_member(v)}):
        if table in k.chains:
            found = chain_problems(f"ip {table}", k.chains[table], nft.chains())
            found += [
                f"set {s} of ip {table} is missing" for s in nft.SETS if s not in k.tables[table]
            ]
            found += [
                f"set {s} of ip {table} is not fireroute's"
                for s in extras.extra_sets("ip", k.tables[table])
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
            found += [
                f"set {s} of bridge {table} is not fireroute's"
                for s in extras.extra_sets(bridge.FAMILY, k.btables[table])
            ]
            out[f"nftables table bridge {table}"] = found
    ipt = [v for v in vms if v.backend == "iptables" and modes.nat_member(v)]
    if ipt:
        out["iptables"] = [
            f"shared iptables rule missing: {r}"
            for r in sorted(extras.shared_rules())
            if r not in k.ipt_have
        ]
        misplaced = order.shared_problem(k.ipt_chains, ipt)
        if misplaced:
            out["iptables"].append(misplaced)
    return out


def veth_problems(k: Kernel, vm: Vm) -> list[str]:
    """The host end of a clone's or a CNI attachment's veth link (and a CNI attachment's
    route to a delegated guest)."""
    if vm.mode == "clone":
        veth = wanted_clone.host_veth(vm)
        address = wanted_clone.host_address(vm, veth).cidr
        want: dict[str, object] = {"kind": veth.link_kind, "address": address, "alias": veth.alias}
        return link_problems(k.links.get(vm.tap), vm.tap, "veth", want, k.addrs(vm.tap))
    veth = wanted_cni.host_veth(vm)
    address = wanted_cni.host_address(vm, veth).cidr
    want = {"kind": veth.link_kind, "address": address, "alias": veth.alias, "mac": veth.mac}
    have = k.links.get(veth.name)
    problems = link_problems(have, veth.name, "veth", want, k.addrs(veth.name))
    route = wanted_cni.host_route(vm)
    if route is not None and route.shown() not in k.routes:
        problems.append(f"host route {route.dst} dev {route.dev} is missing")
    return problems + mtu_problems(have, veth, f'veth "{veth.name}"')


def drift_links(k: Kernel, vm: Vm) -> bool:
    """Does anything of a clone's or CNI attachment's links, namespace or route differ?"""
    if vm.mode == "cni":
        return bool(veth_problems(k, vm) or cni_problems(k, vm))
    return bool(veth_problems(k, vm) or clone_problems(k, vm))
