"""check, gc and restore over the Kernel read and the problems found."""

from __future__ import annotations

from collections.abc import Callable

from fireroute import owner
from fireroute.errors import UsageError
from fireroute.kernel import observe
from fireroute.kernel.read import Source
from fireroute.manager import FORWARD_BEFORE, FORWARD_RECORD, Manager, done
from fireroute.model import Vm
from fireroute.plan import bridge, clone, cni, host, iptables, modes, nft
from fireroute.plan.steps import IP, IPTABLES, NFT, Plan, Step
from fireroute.repair import extras, order
from fireroute.repair.picture import picture
from fireroute.repair.problems import (
    drift_links,
    expected_elements,
    ipt_want,
    ipv6_on,
    link_problems,
    localnet_on,
    remembered,
    shared_problems,
    tap_want,
)
from fireroute.repair.read import Kernel
from fireroute.repair.report import Report, report
from fireroute.state.store import Store
from fireroute.want import bridge as wanted_bridge
from fireroute.want import iptables as wanted_ipt
from fireroute.want import shared as shape
from fireroute.want.iptables import IptRule


def check(m: Manager, names: list[str]) -> Report:
    """Every difference between what the leases want and what the kernel holds, in words:
    the diff of everything (read whole) against what every lease wants, said per VM (those
    ``names``, when given: then without orphans), per shared object, and the orphans."""
    # reading the ruleset needs CAP_NET_ADMIN: without it nothing true could be said
    observe.require_net_admin("check fireroute's networking")
    store = m.state()
    leases = store.all()
    shown = leases if not names else [m.show(n) for n in dict.fromkeys(names)]
    pic = picture(Source(m.runner), leases, store.instance(), _before(store))
    return report(pic, pic.diff(), shown, bool(names))


def _before(store: Store) -> str | None:
    """Forwarding's value before fireroute switched it on: this namespace's record, else the
    state file's."""
    from fireroute.kernel import forwarding as record

    return record.recorded() or store.meta(FORWARD_BEFORE)


def _ipt_of(by_name: dict[str, Vm]) -> Callable[[str], set[str]]:
    """A VM's iptables rules by its name (none for a name without a lease)."""
    return lambda name: ipt_want(by_name[name]) if name in by_name else set()


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
        needs = shape.shared(shape.Population.of(active.values()), instance)
        k = Kernel(m.runner)
        sweep = Plan()
        unused_bridges, leftover = [], set()
        for name, link in k.links.items():
            tag = owner.parse(link.alias)
            if tag is None or tag[0] != instance:
                continue  # not ours, or another state file's
            what = tag[1]
            if what.startswith(owner.BRIDGE):
                if what[len(owner.BRIDGE) :] not in needs.bridges:
                    unused_bridges.append(name)
            elif what not in active or active[what].tap != name:
                leftover.add(name)
                sweep.add(Step(IP, f"link del dev {name}", f'delete leftover link "{name}"'))
        for name in unused_bridges:  # ours, no vm on it, and nothing else attached
            if not k.ports(name) - leftover:
                sweep.add(bridge.delete_bridge(name))
        clone_ns = {v.netns for v in active.values() if v.netns}
        for ns in k.namespaces(instance):
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
        wanted = set().union(*(ipt_want(v) for v in active.values())) if active else set()
        others = False
        for rule in k.rules:
            tag = owner.parse(rule.owner)
            if rule.owner == owner.SHARED:
                continue
            if tag is None or tag[0] != instance:
                others = True
            elif rule.saved not in wanted:
                sweep.add(_delete(rule, "remove leftover iptables rule"))
        ipt_active = any(v.backend == "iptables" for v in active.values())
        if not ipt_active and not others:
            shared_rules = [r for r in k.rules if r.owner == owner.SHARED]
            sweep.add(*(_delete(r, "remove shared iptables rule") for r in shared_rules))
        if not needs.forwarding:
            sweep.add(*m.forwarding_back(store, instance, set(), own=not adopted))
            sweep.forget.append(FORWARD_RECORD)
        if not dry_run:
            m.executor().apply_best_effort(sweep)
            done(sweep)
            if not needs.forwarding and not adopted:
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
        instance = store.instance()
        needs = shape.shared(shape.Population.of(vms), instance)
        k = Kernel(m.runner, vms)
        plan = Plan()
        clear: list[Step] = []  # what is left of a drifted clone: removed first, best effort
        for vm in vms:
            steps = _restore_links(k, vm, clear)
            plan.add(*steps)
            made = any(s.text.endswith("/route_localnet=1") for s in steps)
            if host.localnet(vm) and not made and not localnet_on(k, vm.tap):
                plan.add(host.route_localnet(vm))
        if clear and not dry_run:
            m.executor().apply_best_effort(Plan(clear), count_faults=False)
        forwarding = k.current.forwarding or "0"
        if needs.forwarding and forwarding != "1":
            plan.add(host.set_forwarding("1", forwarding))
            if not dry_run:  # (after a reboot: forwarding and /run both start afresh)
                from fireroute.kernel import forwarding as record

                record.record(forwarding)
        members = [v for v in vms if modes.nat_member(v)]
        shared = shared_problems(k, vms)
        # what our tables hold that no lease asks for goes, in the same transaction as the
        # heal (a verdict map entry of an old place would refuse the new one)
        expected = remembered()
        found = extras.all_strays(k.tables, k.btables, vms, instance, expected)
        for table in needs.tables_of(shape.NAT):
            in_table = [v for v in members if v.backend == "nft" and v.table == table]
            if table not in k.tables:
                k.current.table_is_ours(shape.NAT, table)
            broken = table not in k.tables or shared.get(f"nftables table ip {table}")
            missing = any(
                val not in k.tables.get(table, {}).get(s, {})
                for v in in_table
                for s, vals in expected(v).items()
                for val in vals
            )
            stray = extras.removal("ip", table, found)
            if broken or missing or stray:
                extra = sorted(set(k.chains.get(table, {})) - set(nft.CHAINS))
                fix = nft.heal(table, in_table, needs.egress_of(table))
                # this state file's elements that no lease expects where they are (an older
                # fireroute's layout: a tap's policy pair moved), and elements keyed on its
                # VMs or nobody's, go first
                fix.text = stray + fix.text
                if extra:  # chains someone added to our table: flushed and deleted
                    fix.text += "".join(
                        f"flush chain ip {table} {c}\ndelete chain ip {table} {c}\n" for c in extra
                    )
                fix.text += _drop_sets("ip", table, k.tables.get(table, {}))
                plan.add(fix)
        for table in needs.tables_of(shape.BRIDGE):
            in_table = [v for v in vms if v.mode == "bridge" and v.table == table]
            if table not in k.btables:
                k.current.table_is_ours(bridge.FAMILY, table)
            broken = table not in k.btables or shared.get(f"nftables table bridge {table}")
            missing = any(
                val not in k.btables.get(table, {}).get(s, {})
                for v in in_table
                for s, vals in bridge.filter_elements(v).items()
                for val in vals
            )
            stray = extras.removal(bridge.FAMILY, table, found)
            if broken or missing or stray:
                fix = bridge.filter_heal(table, in_table)
                fix.text = stray + fix.text
                fix.text += _drop_sets(bridge.FAMILY, table, k.btables.get(table, {}))
                plan.add(fix)
        plan.add(*_elsewhere(found, set(needs.tables)))  # (those tables lost theirs above)
        ipt = [v for v in members if v.backend == "iptables"]
        by_name = {v.name: v for v in vms}
        removed = []
        for name, rule in extras.rule_strays(k.rules, _ipt_of(by_name), instance):
            if name is not None or ipt:
                removed.append(rule)
                plan.add(_delete(rule, "remove iptables rule no lease asks for"))
        if ipt:  # the shared rule and each VM's block, whole and in order where they stand
            plan.add(*order.heal(k.ipt_chains, k.ipt_tagged, ipt, removed))
        fixes = [
            r for v in members if v.options.fix_forward_policy for r in wanted_ipt.policy_fix(v)
        ]
        plan.add(*iptables.policy_fix_steps([r for r in fixes if r.saved not in k.ipt_have]))
        if not dry_run and plan:
            m.executor().apply_all(plan)
        return Plan(clear + plan.steps)  # everything restore ran (or, dry, would run)


def _delete(rule: IptRule, what: str) -> Step:
    return Step(IPTABLES, rule.text("delete"), what, table=rule.table)


def _drop_sets(family: str, table: str, have: dict[str, dict[str, str]]) -> str:
    """nft commands deleting the sets and maps someone added to our table (after the chains
    that could use them were flushed)."""
    return "".join(
        f"delete set {family} {table} {s}\n"  # (a map too)
        for s in extras.extra_sets(family, have)
    )


def _elsewhere(found: list[extras.Stray], healed: set[tuple[str, str]]) -> list[Step]:
    """Elements keyed on (or tagged for) one of our VMs in a table of ours none of this state
    file's VMs uses (the (family, table)s ``healed`` already lost theirs)."""
    keyed = [s for s in found if s.vm is not None]
    return [
        Step(NFT, extras.removal(f, t, keyed), f'remove elements no lease asks for from "{f} {t}"')
        for f, t in sorted({(s.family, s.table) for s in keyed} - healed)
    ]


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
    want = tap_want(vm)
    addrs = k.addrs(vm.tap)
    if link is not None and any("owned by" in p for p in link_problems(link, vm.tap, "tap", want)):
        steps = host.tap_down(vm)  # a tap's owner is set only when it is made
        link = None
    else:
        steps = []
    if vm.mode == "bridge":
        br = str(vm.options.bridge)
        if br not in k.links:  # the bridge itself went: ours again, as before
            steps += bridge.create_bridge(vm)
            k.links[br] = wanted_bridge.link(vm)
        if link is None:
            return steps + bridge.tap_up(vm)
        if link_problems(link, vm.tap, "tap", want, addrs):
            steps.append(bridge.tap_up(vm)[1])  # re-attach, re-tag, bring up
        return steps
    create, address, bring_up = host.tap_up(vm)
    if link is None:
        return [*steps, create, address, bring_up, host.ipv6_off(vm)]
    if link_problems(link, vm.tap, "tap", want, addrs):
        if want["address"] not in addrs:
            steps.append(address)
        steps.append(bring_up)
    if ipv6_on(k, vm.tap):
        steps.append(host.ipv6_off(vm))
    return steps
