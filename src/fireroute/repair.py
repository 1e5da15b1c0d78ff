"""Make state and kernel agree: ``check`` reports drift, ``gc`` removes what the state does not
account for (and finishes or undoes half-made VMs), ``restore`` recreates every active VM's
host networking after a reboot. Only objects carrying fireroute's owner tags are ever touched.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address

from fireroute.errors import KernelError
from fireroute.kernel import observe
from fireroute.kernel.apply import Executor, read_sysctl
from fireroute.kernel.run import Runner, read_value, which
from fireroute.manager import FORWARD_BEFORE, Manager
from fireroute.model import Vm
from fireroute.plan import bridge, clone, host, iptables, modes, nft
from fireroute.plan.steps import IP, IPTABLES, NFT, Plan, Step


class Kernel:
    """What the host holds of ours: links, nft elements per table/set, tagged iptables rules."""

    def __init__(self, runner: Runner) -> None:
        res = runner(["ip", "-j", "-d", "addr", "show"], None)
        if res.rc != 0:
            raise KernelError("list links", res.err)
        docs = json.loads(res.out or "[]")
        self.links: dict[str, dict] = {
            str(d["ifname"]): d
            for d in docs
            if isinstance(d, dict) and "ifname" in d  # type: ignore[union-attr]
        }
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        """table -> set -> {element value (as nft text) -> comment}"""
        if which("nft"):
            for table in observe.nft_our_tables(runner):
                self.tables[table] = _elements(runner, table)
        self.rules: list[tuple[str, str]] = []
        if which("iptables-nft-save"):
            self.rules = [
                (t, line)
                for t, line in observe.iptables_saved(runner)
                if iptables.comment_tag(line)
            ]

    def tap_ok(self, vm: Vm) -> list[str]:
        link = self.links.get(vm.tap)
        if link is None:
            return [f'tap "{vm.tap}" is missing']
        problems = []
        addrs = {
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        }
        want = None
        if vm.mode == "nat":
            want = f"{vm.tap_ip}/{vm.prefix}"
        elif vm.mode == "clone" and vm.net is not None:
            want = f"{vm.net.network_address + 1}/{vm.net.prefixlen}"
        if want and want not in addrs:
            problems.append(f'"{vm.tap}" lacks address {want}')
        if vm.mode == "bridge" and link.get("master") != vm.options.bridge:
            problems.append(f'tap "{vm.tap}" is not attached to bridge "{vm.options.bridge}"')
        if "UP" not in link.get("flags", []):
            problems.append(f'tap "{vm.tap}" is down')
        if link.get("ifalias") != host.owner_alias(vm.name):
            problems.append(f'tap "{vm.tap}" does not carry owner tag {host.owner_alias(vm.name)}')
        return problems


def _val(v: object) -> str:
    """An element value from nft's JSON, as nft text."""
    if isinstance(v, dict) and "concat" in v:
        return " . ".join(_val(x) for x in v["concat"])
    text = str(v)
    try:
        IPv4Address(text)
        return text
    except ValueError:
        return f'"{text}"'


def _elements(runner: Runner, table: str) -> dict[str, dict[str, str]]:
    res = runner(["nft", "-j", "list", "table", "ip", table], None)
    out: dict[str, dict[str, str]] = {name: {} for name in nft.SETS}
    if res.rc != 0:
        return out
    for item in json.loads(res.out).get("nftables", []):
        s = item.get("set")
        if not s or s.get("name") not in out:
            continue
        for e in s.get("elem", []):
            if isinstance(e, dict) and "elem" in e:
                out[s["name"]][_val(e["elem"]["val"])] = str(e["elem"].get("comment", ""))
            else:
                out[s["name"]][_val(e)] = ""
    return out


def _expected(vm: Vm) -> dict[str, str]:
    """The set elements a VM should have in the shared NAT table."""
    if not modes.nat_member(vm):
        return {}
    if vm.mode == "bridge":
        return {
            "masq": f'{vm.nat_source} . "{vm.uplink}"',
            "egress": f'"{vm.options.bridge}" . "{vm.uplink}"',
        }
    return {
        "masq": f'{vm.nat_source} . "{vm.uplink}"',
        "egress": f'"{vm.tap}" . "{vm.uplink}"',
        "taps": f'"{vm.tap}"',
        "vms": f'"{vm.tap}" . {vm.nat_source}',
    }


def _ipv6_on(dev: str) -> bool:
    return read_value(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6") != "1"


def drift(k: Kernel, vm: Vm) -> list[str]:
    problems = list(k.tap_ok(vm))
    if vm.mode == "nat" and vm.tap in k.links and _ipv6_on(vm.tap):
        problems.append(f'IPv6 is on for tap "{vm.tap}" (guests could reach the host over it)')
    if vm.mode == "clone" and vm.netns and not os.path.exists(f"/var/run/netns/{vm.netns}"):
        problems.append(f'namespace "{vm.netns}" is missing')
    if vm.state != "active":
        problems.append(f"lease is {vm.state} (an interrupted run; gc finishes it)")
    if not modes.nat_member(vm):
        pass
    elif vm.backend == "nft":
        sets = k.tables.get(vm.table)
        if sets is None:
            problems.append(f'nftables table "{vm.table}" is missing')
        else:
            for name, val in _expected(vm).items():
                if val not in sets.get(name, {}):
                    problems.append(f"nft set {vm.table}/{name} lacks {val}")
    else:
        have = {line for _, line in k.rules if iptables.comment_tag(line) == iptables.tag(vm.name)}
        want = {r for _, r in iptables.vm_rules(vm)}
        normalized = {line.replace('"', "") for line in have}
        for rule in want:
            if rule not in normalized:
                problems.append(f"iptables rule missing: {rule}")
    return problems


def check(m: Manager, names: list[str]) -> dict[str, list[str]]:
    store = m._store(create=False)
    vms = store.all() if not names else [m.show(n) for n in names]
    k = Kernel(m.runner)
    report = {vm.name: drift(k, vm) for vm in vms}
    if vms and read_sysctl(host.FORWARD_KEY) != "1":
        for vm in vms:
            report[vm.name].append("IPv4 forwarding is off")
    return report


def gc(m: Manager, dry_run: bool = False) -> Plan:
    """Finish half-made VMs (pending/removing leases are taken down) and remove every tagged
    object no active lease accounts for."""
    if not dry_run:
        observe.require_net_admin("collect fireroute's leftovers")
    store = m._store(create=False)
    with store.locked():
        half = [v for v in store.all() if v.state != "active"]
        plan = m._down_plan(store, half) if half else Plan()
        if half and not dry_run:
            Executor(m.runner).apply_best_effort(plan)
            store.remove([v.name for v in half])
        active = {v.name: v for v in store.all()}
        k = Kernel(m.runner)
        sweep = Plan()
        for name, link in k.links.items():
            alias = str(link.get("ifalias", ""))
            owner = alias[len(host.ALIAS_PREFIX) :] if alias.startswith(host.ALIAS_PREFIX) else None
            if owner is not None and owner.startswith(bridge.BRIDGE_TAG):
                in_use = {str(v.options.bridge) for v in active.values() if v.mode == "bridge"}
                if owner[len(bridge.BRIDGE_TAG) :] not in in_use:
                    sweep.add(bridge.delete_bridge(name))
            elif owner is not None and (owner not in active or active[owner].tap != name):
                sweep.add(Step(IP, f"link del dev {name}", f'delete leftover link "{name}"'))
        bridges_kept = {
            f"{bridge.BRIDGE_TAG}{v.options.bridge}"
            for v in active.values()
            if v.mode == "bridge" and v.options.masquerade
        }
        clone_ns = {v.netns for v in active.values() if v.netns}
        for ns in observe.our_namespaces(store.instance()):
            if ns not in clone_ns:
                sweep.add(Step(IP, f"netns del {ns}", f'delete leftover namespace "{ns}"'))
        for table, sets in k.tables.items():
            if not any(v.backend == "nft" and v.table == table for v in active.values()):
                sweep.add(
                    Step(
                        NFT, f"delete table ip {table}\n", f'delete unused nftables table "{table}"'
                    )
                )
                continue
            for set_name, elems in sets.items():
                stale = [
                    val
                    for val, owner in elems.items()
                    if owner not in active and owner not in bridges_kept
                ]
                if stale:
                    body = ", ".join(stale)
                    sweep.add(
                        Step(
                            NFT,
                            f"add element ip {table} {set_name} {{ {body} }}\n"
                            f"delete element ip {table} {set_name} {{ {body} }}\n",
                            f'remove leftover elements from "{table}"',
                        )
                    )
        ipt_active = any(v.backend == "iptables" for v in active.values())
        for table, line in k.rules:
            tag = iptables.comment_tag(line) or ""
            owner = tag[len(iptables.TAG) :]
            if (tag == iptables.SHARED and not ipt_active) or (
                tag != iptables.SHARED and owner not in active
            ):
                sweep.add(
                    Step(IPTABLES, "-D" + line[2:], "remove leftover iptables rule", table=table)
                )
        before = store.meta(FORWARD_BEFORE)
        if not active and before is not None and read_sysctl(host.FORWARD_KEY) != before:
            sweep.add(host.set_forwarding(before, read_sysctl(host.FORWARD_KEY)))
        if not dry_run:
            Executor(m.runner).apply_best_effort(sweep)
            if not active:
                store.remove([], drop_meta=[FORWARD_BEFORE])
        plan.add(*sweep.steps)
        return plan


def restore(m: Manager, dry_run: bool = False) -> Plan:
    """Recreate what active leases need and the kernel lacks (after a reboot, say): same taps,
    addresses, MACs, set elements and rules."""
    if not dry_run:
        observe.require_net_admin("restore fireroute's networking")
    store = m._store(create=False)
    with store.locked():
        vms = [v for v in store.all() if v.state == "active"]
        k = Kernel(m.runner)
        plan = Plan()
        for vm in vms:
            if vm.mode != "nat":
                if vm.tap not in k.links:
                    if vm.netns and vm.netns in observe.our_namespaces(store.instance()):
                        Executor(m.runner).apply_best_effort(Plan(clone.down(vm)))
                    missing = (
                        {str(vm.options.bridge)}
                        if vm.mode == "bridge" and str(vm.options.bridge) not in k.links
                        else set()
                    )
                    plan.add(*modes.links_up([vm], missing))
                    k.links[str(vm.options.bridge)] = k.links.get(str(vm.options.bridge), {})
                elif vm.mode == "bridge" and k.links[vm.tap].get("master") != vm.options.bridge:
                    br = str(vm.options.bridge)
                    if br not in k.links:  # the bridge itself went: ours again, as before
                        plan.add(*bridge.create_bridge(vm))
                        k.links[br] = {}
                    plan.add(bridge.tap_up(vm)[1])  # re-attach the tap
                continue
            create, address, bring_up = host.tap_up(vm)
            link = k.links.get(vm.tap)
            if link is None:
                plan.add(create, address, bring_up, host.ipv6_off(vm))
            elif k.tap_ok(vm):
                addrs = {a.get("local") for a in link.get("addr_info", [])}
                plan.add(*([] if str(vm.tap_ip) in addrs else [address]), bring_up)
            if link is not None and _ipv6_on(vm.tap):
                plan.add(host.ipv6_off(vm))
        forwarding = read_sysctl(host.FORWARD_KEY)
        if vms and forwarding != "1":
            plan.add(host.set_forwarding("1", forwarding))
        members = [v for v in vms if modes.nat_member(v)]
        for table in sorted({v.table for v in members if v.backend == "nft"}):
            in_table = [v for v in members if v.backend == "nft" and v.table == table]
            fresh = table not in k.tables
            if fresh:
                observe.check_table_owner(table, m.runner)
            missing = [
                v
                for v in in_table
                if fresh
                or any(val not in k.tables[table].get(s, {}) for s, val in _expected(v).items())
            ]
            if missing:
                plan.add(nft.vms_up(table, missing, fresh=True))
        ipt = [v for v in members if v.backend == "iptables"]
        if ipt:
            have = {line.replace('"', "") for _, line in k.rules}
            has_ct = any(iptables.comment_tag(line) == iptables.SHARED for _, line in k.rules)
            for step in iptables.vms_up(ipt, need_conntrack=not has_ct):
                if step.text not in have:
                    plan.add(step)
        if not dry_run and plan:
            Executor(m.runner).apply_all(plan)
        return plan
