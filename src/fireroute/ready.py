"""Ready VMs (issue 25): NAT VMs made ahead of their ``up``, of one shape, under names no
client can give (``_ready-<n>``: model.READY); an ``up`` of that shape claims one instead of
making a VM: the lease is renamed and the owner tags of its objects follow it, in one plan
applied all or nothing.

A ready VM is an ordinary lease: ``ls``, ``check``, ``gc``, ``restore`` and ``teardown`` see it
as any other VM. Only its name is special: :func:`fill` makes them (``up`` with ``ready``: the
one path that takes such a name), :func:`claim` renames one, :func:`drain` takes them down.
The daemon keeps them (serve/worker.py); nothing else makes them.

A claim's kernel changes are the diff between the ready VM's objects and the claiming VM's,
which are the same but for the name in their owner tags: the tap's alias is set in place (the
diff's own ``set``), the iptables rules (their comment is part of the rule) are replaced, the
new ones in before the old go, and so are the nft elements, whose comment the diff does not
compare (:func:`rename_plan`). The tap keeps its name (``fr-_ready-<n>``): the answer names it.
"""

from __future__ import annotations

from fireroute import request
from fireroute.model import Options, Vm, check_vm_name, is_ready

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.manager import Manager
    from fireroute.plan.diff import Op
    from fireroute.plan.ops import Act
    from fireroute.plan.steps import Plan, Step
    from fireroute.state.store import Store


def members(store: Store, limit: int = -1) -> list[Vm]:
    """The ready VMs of ``store`` (at most ``limit``; -1: all)."""
    from fireroute.model import READY

    return [v for v in store.named(READY, limit) if is_ready(v.name)]


def fill(manager: Manager, options: Options, count: int, most: int = 1) -> int:
    """Up to ``most`` more ready VMs of ``options``, so that there are at most ``count``;
    returns how many there are after. A new one takes the first number whose name and tap
    (``fr-_ready-<n>``) are free: a claimed VM keeps its tap, so its number is not used
    again while it lives."""
    from fireroute.addressing import default_tap_name
    from fireroute.model import READY

    store = manager.state()
    have = {v.name for v in members(store)}
    names: list[str] = []
    i = 0
    while len(have) + len(names) < count and len(names) < most:
        name = READY + str(i)
        if name not in have and store.tap_owner(default_tap_name(name)) is None:
            names.append(name)
        i += 1
    if names:
        manager.up(names, options, ready=True)
    return len(have) + len(names)


def claim(manager: Manager, name: str, options: Options) -> Vm | None:
    """VM ``name`` made of an active ready VM with ``options`` (None, nothing changed: there is
    none, or ``name`` is a VM already, which ``up`` answers). The lease is renamed ``pending``
    first: a run killed before the plan is applied leaves a half-made VM, which the next up,
    down or gc takes down as any other (its objects, tagged for the ready VM, are orphans then)."""
    check_vm_name(name)
    store = manager.state()
    if store.db is None:
        return None
    with store.locked():
        if store.get(name) is not None:
            return None
        old = _match(store, options)
        if old is None:
            return None
        new = renamed(old, name)
        plan = rename_plan(old, new)
        store.rename(old.name, name, "pending")
        try:
            manager.run(plan)
        except BaseException:
            store.rename(name, old.name, "active")  # (the plan undid what it did)
            raise
        store.set_state([name], "active")
        return new


def _match(store: Store, options: Options) -> Vm | None:
    """The first ready VM, if it has ``options`` (the daemon makes them of one shape, and
    takes them down when it starts: another is none of its own, and no claim is made then)."""
    for vm in members(store, 1):
        if vm.state == "active" and vm.mode == "nat" and not request.differences(vm, options):
            return vm
    return None


def renamed(vm: Vm, name: str) -> Vm:
    """``vm``'s record under ``name`` (everything else as it is), active."""
    return vm.replaced(name=name, state="active")


def rename_plan(old: Vm, new: Vm) -> Plan:
    """What takes ``old``'s objects (as recorded) to ``new``'s: the diff of the two, with the
    nft elements whose owner tag differs replaced (the diff compares an element's key only)."""
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import DELETE, DIFFERS, REPLACE, Op, Scope, diff
    from fireroute.plan.steps import Plan
    from fireroute.want import render

    have = render.index(render.vm(old))
    want = render.index(render.vm(new))
    ops = diff(have, want, Scope([old.name, new.name]), old.owner)
    touched = {op.id for op in ops}
    for key, obj in want.items():
        found = have.get(key)
        tagged = found is not None and found.owner != obj.owner
        if obj.kind == "nft element" and tagged and key not in touched:
            ops.append(Op(REPLACE, obj, DIFFERS, have=found))
    # In the compiler's order: the removals first, the link, then the new rules or elements.
    # (Not an element's removal and addition in one group: the in-process executor applies a
    # group's elements as one transaction of its additions, then its removals, and the old
    # element and the new have one key.) The old iptables rules go after the new ones, in
    # the same iptables-nft-restore: each table's section, new rules then old, is one
    # transaction, so the VM is never without its rules (the kernel takes two rules that
    # differ in their comment only; each matches the VM's own tap).
    steps = _rules_first(compile(ops))
    # A take-down's steps have no undo of their own: given theirs here, reversed (an unwind
    # runs undo steps newest first). The removals' undo is one per transaction, on the first
    # removal of it, so that the rules are made again in their order (each removal's own
    # would reverse it): the nft elements' (one transaction), and each iptables table's
    # (iptables-nft-restore commits table by table, and an unwind undoes the tables it
    # committed before one failed: kernel/apply.py).
    removals = [s for s in steps if not s.undo and _acts(s, DELETE)]
    for step in steps:
        if not step.undo and step not in removals:
            step.undo = _undo(_acts(step), have)
    by_transaction: dict[tuple[str, str], list[Step]] = {}
    for step in removals:
        by_transaction.setdefault((step.tool, step.table), []).append(step)
    for group in by_transaction.values():
        group[0].undo = _undo([a for s in group for a in _acts(s)], have)
    return Plan(steps)


def _rules_first(steps: list[Step]) -> list[Step]:
    """``steps`` with the iptables removals moved after the last iptables addition."""
    from fireroute.plan.diff import DELETE
    from fireroute.plan.steps import IPTABLES

    late = [s for s in steps if s.tool == IPTABLES and _acts(s, DELETE)]
    rest = [s for s in steps if s not in late]
    adds = [i for i, s in enumerate(rest) if s.tool == IPTABLES]
    if not late or not adds:
        return steps
    return rest[: adds[-1] + 1] + late + rest[adds[-1] + 1 :]


def _acts(step: Step, verb: str | None = None) -> list[Act]:
    return [a for a in getattr(step, "ops", ()) if verb is None or a.verb == verb]


def _undo(acts: list[Act], have: dict) -> tuple[Step, ...]:
    from fireroute.plan.compiler import compile

    return tuple(reversed(compile(_back(acts, have))))


def _back(acts: list[Act], have: dict) -> list[Op]:
    """The operations that put back what ``acts`` changed of the objects ``have``: a
    deleted one made again, a set one set as it was, a new one deleted."""
    from fireroute.plan.diff import CREATE, DELETE, MISSING, ORPHAN, SET, Op

    out: list[Op] = []
    for a in acts:
        found = have.get((a.obj.kind, a.obj.key))
        if a.verb == DELETE:
            out.append(Op(CREATE, a.obj, MISSING))
        elif a.verb == SET and found is not None:
            out.append(Op(SET, found, MISSING))
        elif a.verb == CREATE:
            out.append(Op(DELETE, a.obj, ORPHAN))
    return out


def drain(manager: Manager) -> list[str]:
    """Every ready VM of the state file down; returns their names."""
    store = manager.state()
    if store.db is None:
        return []
    with store.locked():
        vms = members(store)
        manager.take_down(store, vms)
    return [v.name for v in vms]
