"""The verbs that change a running VM in place: ``policy`` (its egress policy) and ``publish``
(its published host ports). Each is the one diff (plan/diff.py) on one VM: what it has (its
objects rendered with its old options, in a NAT table holding the parts those need) against
what it wants (rendered with the new options), kept to the sets those options fill, compiled
(plan/compiler.py) into one nft transaction. A part of the table (want/tables.py PARTS) the
VM needs for the first time is declared with it; route_localnet comes on for a newly
published 127.0.0.1 port, and UDP flows to a port published or unpublished are forgotten
once the map changed; a step failing after the transaction has it undone (what came goes,
what went comes back). docs/core-migration.md §9; ``Manager.policy`` and ``publish`` call
these.
"""

from __future__ import annotations

from functools import lru_cache

from fireroute.errors import ConflictError, MissingTool, NotFound, UsageError
from fireroute.kernel import observe
from fireroute.kernel.run import which
from fireroute.model import Options, Vm, check_vm_name
from fireroute.plan.steps import CONNTRACK, NFT, SYSCTL, Plan, Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from fireroute.kernel.apply import Executor
    from fireroute.kernel.run import Runner
    from fireroute.plan.diff import Op
    from fireroute.state.store import Store
    from fireroute.want.objects import Obj

    class Verbs(Protocol):
        """What these verbs use of manager.py's ``Manager``."""

        runner: Runner
        executor: Callable[[], Executor]

        def state(self) -> Store: ...

        def show(self, name: str) -> Vm: ...


POLICY_FIELDS = ("egress", "allow_out", "deny_out")
"""the request fields ``policy`` changes"""
POLICY, PORTS = "egress policy", "published ports"
"""what a change is of (its steps' words)"""


def running(m: Verbs, name: str) -> Vm:
    """A VM that is up (under the caller's lock), or the error saying it is not."""
    old = m.show(name)
    if old.state != "active":
        raise ConflictError(f'vm "{name}" is not up (state {old.state})')
    return old


def changed(old: Vm, options: Options) -> Vm:
    """``old`` with other options: the same block, devices, MAC and owner."""
    return old.replaced(options=options)


# -- policy ----------------------------------------------------------------------------------


def policy(m: Verbs, name: str, changes: dict[str, object], dry_run: bool = False) -> Vm:
    """Change a running VM's egress policy (``egress``, ``allow_out``, ``deny_out`` as
    request fields) in one nft transaction; connections the new policy forbids are cut at
    their next packet (the policy rule comes before the established accept). A dry run
    returns the VM as it would be."""
    unknown = sorted(set(changes) - set(POLICY_FIELDS))
    if unknown:
        raise UsageError(f'policy changes only the egress policy, not "{unknown[0]}"')
    check_vm_name(name)
    store = m.state()
    if not dry_run:
        observe.require_net_admin(f'change the egress policy of vm "{name}"')
    with store.locked():
        old = running(m, name)
        options = _policy_options(m, old, changes)
        new = changed(old, options)
        if dry_run:
            return new
        plan = Plan(plan_change(old, new, POLICY))
        if plan:  # else the elements are already what they should be
            m.executor().apply_all(plan)
        store.set_options(name, options)
        return new


def _policy_options(m: Verbs, old: Vm, changes: dict[str, object]) -> Options:
    """``old``'s options with ``changes``; ``public`` keeps the host networks read at up
    (read now if it had none)."""
    from fireroute import request

    fields = request.fields_of(old.options)
    fields.update({k: v for k, v in changes.items() if v is not None})
    options = request.options(fields)
    options.host_nets = old.options.host_nets
    if options.egress == "public" and not options.host_nets:
        from fireroute.model import merged

        options.host_nets = merged(observe.link_networks(old.uplink, m.runner, options.ipv6))
    return options


# -- publish ---------------------------------------------------------------------------------


def publish(
    m: Verbs, name: str, add: list[str], remove: list[str], dry_run: bool = False
) -> tuple[Vm, Plan]:
    """Publish (``add``) or unpublish (``remove``) host ports of a running VM, as
    ``--publish`` specs, in one nft transaction; a port another VM holds is a conflict. A
    dry run returns the plan and changes nothing."""
    from fireroute import allocate, request
    from fireroute.model import Published

    check_vm_name(name)
    adding = [Published.parse(t) for t in add]
    removing = [Published.parse(t) for t in remove]
    if any(p.proto == "udp" for p in adding + removing) and which("conntrack") is None:
        raise MissingTool("conntrack not found: install the conntrack package")
    store = m.state()
    if not dry_run:
        observe.require_net_admin(f'change the published ports of vm "{name}"')
    with store.locked():
        old = running(m, name)
        missing = [p for p in removing if p not in old.options.publish]
        if missing:
            raise NotFound(f'vm "{name}" does not publish "{missing[0]}"')
        kept = [p for p in old.options.publish if p not in removing]
        fresh = [p for p in adding if p not in kept]
        fields = request.fields_of(old.options)
        fields["publish"] = [str(p) for p in kept + fresh]
        options = request.options(fields)  # a port given twice, a bad spec: refused
        options.host_nets = old.options.host_nets
        allocate.check_ports(store, m.runner, name, tuple(fresh))
        new = changed(old, options)
        plan = Plan(plan_change(old, new, PORTS))
        if not dry_run:
            if plan:
                m.executor().apply_all(plan)
            store.set_options(name, options)
        return new, plan


# -- the diff --------------------------------------------------------------------------------


def _sets(what: str) -> tuple[str, ...]:
    """The sets and maps a change of ``what`` writes."""
    from fireroute.want.tables import POLICY_SETS, PORT_MAPS

    return POLICY_SETS if what == POLICY else PORT_MAPS


def _rendered(
    vm: Vm, held: frozenset[tuple[str, str]]
) -> tuple[dict[tuple, Obj], frozenset[tuple[str, str]]]:
    """The VM's objects in its NAT tables' layouts (the ip6 one too for a VM with IPv6), and
    the parts (want/tables.py PARTS) each table holds, as (family, part): those its elements
    need, and ``held``."""
    from fireroute.want import render
    from fireroute.want.tables6 import parts6_of

    objs = render.vm(vm)
    elems = [o for o in objs if o.kind == "nft element"]
    parts = held | {(e.family, p) for e in elems for p in parts6_of((e.set,))}  # type: ignore[attr-defined]
    families = ("ip", "ip6") if vm.net6 is not None else ("ip",)
    layouts = [
        o
        for f in families
        for o in _layout(f, vm.table, frozenset(p for fam, p in parts if fam == f))
    ]
    return render.index([*layouts, *objs]), parts


@lru_cache(maxsize=16)
def _layout(family: str, table: str, parts: frozenset[str]) -> tuple[Obj, ...]:
    """want/tables.py's ``nat_layout`` (tables6.py's ``nat6_layout``: ``family`` ip6), made
    once per table and parts (a value: its objects are never changed), not for both sides of
    every change."""
    if family == "ip6":
        from fireroute.want.tables6 import nat6_layout

        return tuple(nat6_layout(table, parts))
    from fireroute.want.tables import nat_layout

    return tuple(nat_layout(table, parts))


def _kept(op: Op, names: tuple[str, ...]) -> bool:
    """What the change writes: the elements of ``names``, a part of the NAT table declared,
    the route_localnet a 127.0.0.1 port needs (a clone's namespace is not touched)."""
    obj = op.obj
    if obj.kind == "nft element":
        return obj.set in names  # type: ignore[attr-defined]
    if obj.kind in ("nft set", "nft chain"):
        return op.verb != "delete" and obj.ns is None
    return obj.kind == "sysctl" and op.verb == "create" and obj.key[-1].endswith("route_localnet")


def ops_of(old: Vm, new: Vm, what: str) -> list[Op]:
    """The diff of ``old`` against ``new`` (the same VM, other options), kept to what
    ``what`` (:data:`POLICY`, :data:`PORTS`) writes. A part of the table is declared
    (``set``, idempotent), not created: another VM may have made it already."""
    from fireroute.plan.diff import CREATE, SET, Op, Scope, diff

    current, had = _rendered(old, frozenset())
    desired, _ = _rendered(new, had)
    names = _sets(what)
    out = []
    for op in diff(current, desired, Scope([new.name]), new.owner):
        if not _kept(op, names):
            continue
        if op.verb == CREATE and op.obj.kind in ("nft set", "nft chain"):
            op = Op(SET, op.obj, op.reason)
        out.append(op)
    return out


def plan_change(old: Vm, new: Vm, what: str) -> list[Step]:
    """The steps changing ``old``'s ``what`` to ``new``'s: the elements that go and those
    that come (and a part declared) as one nft transaction, then route_localnet, then the
    UDP flows to the ports published or unpublished forgotten; none when nothing changes."""
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import CREATE, MISSING, Op

    ops = ops_of(old, new, what)
    steps = compile([op for op in ops if op.obj.kind != "sysctl"])
    tables = [s for s in steps if s.tool == NFT]
    for s in tables:  # (the removal and the additions run as one nft process)
        s.what = f'change the {what} of vm "{new.name}"'
    gone = [op.obj for op in ops if op.verb == "delete" and op.obj.kind == "nft element"]
    back = compile([Op(CREATE, e, MISSING) for e in gone]) if gone else []
    if gone:  # undone (a later step failed): what went comes back, after what came went
        tables[0].undo = tuple(s for s in back if s.tool == NFT)
    sysctls = [op for op in ops if op.obj.kind == "sysctl"]
    localnet = compile(sysctls) if sysctls else []
    # UDP flows to the ports published and unpublished forgotten: the compiler's steps for
    # the port elements it makes (those that came, and those that went, as ``back`` makes them)
    flushes = [s for s in steps + back if s.tool == CONNTRACK]
    assert all(s.tool in (NFT, SYSCTL, CONNTRACK) for s in steps + localnet)
    return tables + localnet + flushes
