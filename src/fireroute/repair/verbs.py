"""check, gc and restore over the Kernel read and the problems found."""

from __future__ import annotations

from fireroute import owner
from fireroute.errors import UsageError
from fireroute.kernel import observe
from fireroute.kernel.read import Source
from fireroute.manager import FORWARD_BEFORE, FORWARD_RECORD, Manager, done
from fireroute.model import Vm
from fireroute.plan import bridge, modes, nft
from fireroute.plan.steps import IP, IPTABLES, Plan, Step
from fireroute.repair.heal import healing
from fireroute.repair.picture import picture
from fireroute.repair.problems import (
    expected_elements,
    ipt_want,
)
from fireroute.repair.read import Kernel
from fireroute.repair.report import Report, report
from fireroute.state.store import Store
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
    """Recreate what active leases need and the kernel lacks (after a reboot, or drift), and
    remove what our tables and rules hold that no lease asks for: the diff, applied (namespaces
    made again whole are cleared first, best effort; the rest all or nothing). Nothing
    present and right is touched, so a second run does nothing."""
    observe.require_net_admin("restore fireroute's networking")
    store = m.state()
    with store.locked():
        vms = [v for v in store.all() if v.state == "active"]
        pic = picture(Source(m.runner), vms, store.instance(), _before(store))
        todo = healing(pic, pic.diff())
        if todo.clear and not dry_run:
            m.executor().apply_best_effort(Plan(todo.clear), count_faults=False)
        if todo.forwarding and not dry_run:  # (after a reboot: forwarding and /run start afresh)
            from fireroute.kernel import forwarding as record

            record.record(pic.cur.forwarding or "0")
        if todo.steps and not dry_run:
            m.executor().apply_all(Plan(todo.steps))
        return Plan(todo.clear + todo.steps)  # everything restore ran (or, dry, would run)


def _delete(rule: IptRule, what: str) -> Step:
    return Step(IPTABLES, rule.text("delete"), what, table=rule.table)
