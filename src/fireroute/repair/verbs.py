"""check, gc and restore: lock, read everything, diff against what the leases want, then say
it (check), apply it (restore) or collect what no lease wants (gc)."""

from __future__ import annotations

from fireroute import owner
from fireroute.errors import UsageError
from fireroute.kernel import observe
from fireroute.kernel.read import Source
from fireroute.kernel.scope import FORWARD6_BEFORE, FORWARD6_RECORD
from fireroute.manager import FORWARD_BEFORE, FORWARD_RECORD, Manager, done
from fireroute.model import Vm
from fireroute.plan.steps import IPTABLES, Plan, Step
from fireroute.repair.collect import sweep
from fireroute.repair.heal import healing
from fireroute.repair.picture import picture, readable
from fireroute.repair.report import Report, report
from fireroute.state.store import Store


def check(m: Manager, names: list[str]) -> Report:
    """Every difference between what the leases want and what the kernel holds, in words:
    the diff of everything (read whole) against what every lease wants, said per VM (those
    ``names``, when given: then without orphans), per shared object, and the orphans."""
    # reading the ruleset needs CAP_NET_ADMIN: without it nothing true could be said
    observe.require_net_admin("check fireroute's networking")
    store = m.state()
    leases = store.all()
    shown = leases if not names else [m.show(n) for n in dict.fromkeys(names)]
    pic = picture(Source(m.runner), leases, store.instance(), *_befores(store), _own6(store))
    readable(pic, leases)
    return report(pic, pic.diff(), shown, bool(names))


def _befores(store: Store) -> tuple[str | None, str | None]:
    """Forwarding's value before fireroute switched it on, IPv4's and IPv6's: this
    namespace's record, else the state file's."""
    return (
        _recorded() or store.meta(FORWARD_BEFORE),
        _recorded(six=True) or store.meta(FORWARD6_BEFORE),
    )


def _own6(store: Store, adopted: bool = False) -> str | None:
    """The state file's own IPv6 pool, as recorded (not when another state file's id is
    collected: that one's is not known)."""
    from fireroute.state.store import POOL6

    return None if adopted else store.meta(POOL6)


def _recorded(six: bool = False) -> str | None:
    """This namespace's record of forwarding's (IPv6's: ``six``) value before fireroute
    switched it on."""
    from fireroute.kernel import forwarding as record

    return record.recorded(record.V6 if six else record.V4)


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
    store = m.state()
    with store.locked():
        adopted = instance is not None and instance != store.instance()
        instance = instance or store.instance()
        # half-made VMs, and CNI attachments whose namespace the runtime removed (a crashed
        # VM, a DEL that never came): both are taken down
        half = [] if adopted else [v for v in store.all() if v.state != "active" or gone(v)]
        plan = m.take_down(store, half, dry_run)
        leases = [] if adopted else store.all()
        befores = _befores(store) if not adopted else (_recorded(), _recorded(six=True))
        pic = picture(Source(m.runner), leases, instance, *befores, _own6(store, adopted))
        swept = Plan(sweep(pic))
        if not leases:  # forwarding is no VM's: its records go once it is back
            swept.forget += [FORWARD_RECORD, FORWARD6_RECORD]
        if not dry_run:
            m.run(swept, all_or_nothing=False)
            done(swept)
            if not leases and not adopted:
                store.remove([], drop_meta=[FORWARD_BEFORE, FORWARD6_BEFORE])
        plan.add(*swept.steps)
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
        pic = picture(Source(m.runner), vms, store.instance(), *_befores(store), _own6(store))
        readable(pic, vms)
        todo = healing(pic, pic.diff())
        if todo.clear and not dry_run:
            m.run(Plan(todo.clear), all_or_nothing=False, count_faults=False)
        if todo.forwarding and not dry_run:  # (after a reboot: forwarding and /run start afresh)
            from fireroute.kernel import forwarding as record

            record.record(pic.cur.forwarding or "0")
        if todo.forwarding6:  # (the uplink keeps its RA-learned route: kernel/uplink6.py)
            from fireroute.kernel import forwarding as record
            from fireroute.kernel import uplink6

            uplinks = {v.uplink for v in vms if v.net6 is not None}
            todo.steps = uplink6.keep_routes(todo.steps, m.runner, uplinks, dry_run)
            if not dry_run:
                record.record(pic.cur.forwarding6 or "0", record.V6)
        if todo.steps and not dry_run:
            _record_proxies(vms)
            _record_ipt_made(store, todo.steps, m)
            m.run(Plan(todo.steps))
        return Plan(todo.clear + todo.steps)  # everything restore ran (or, dry, would run)


def _record_ipt_made(store: Store, steps: list[Step], m: Manager) -> None:
    """The iptables-nft tables and chains restore's rules bring in, recorded beside those
    the state file's ups recorded, to go with the last rule (kernel/scope.py)."""
    if not any(s.tool == IPTABLES for s in steps):
        return
    from fireroute.kernel import scope

    made = scope.made_record(
        store.meta(scope.IPT_MADE), scope.would_make(observe.nft_ip_chains(m.runner))
    )
    if made:
        store.set_meta(scope.IPT_MADE, made)


def _record_proxies(vms: list[Vm]) -> None:
    """What the uplinks of ``--proxy-ndp`` VMs have as proxy_ndp, recorded before restore
    writes its 1 (after a reboot: /run is cleared), for the last proxy entry's down to give
    back (kernel/uplink6.py)."""
    from fireroute.kernel import uplink6

    for uplink in sorted({v.uplink for v in vms if v.options.proxy_ndp}):
        uplink6.record_proxy(uplink)
