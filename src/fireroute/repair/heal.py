"""What ``restore`` runs: the diff's operations (plan/diff.py) compiled into steps
(plan/compiler.py), less what is gc's business (links, namespaces and tables no lease
accounts for; but an IPv6 address no lease asks for on a tap a lease wants, the kernel's own
link-local address, is deleted), with four turns of today's restore kept:

- a clone's namespace or a CNI attachment that differs in anything is made again whole (what
  is left of it cleared first, best effort);
- a link of another kind where a tap should be is set (tagged, attached, brought up), never
  deleted: only a tap whose owner differs is made again;
- a set whose type differs is declared again with the table's chains (flushed first, in the
  same transaction: the kernel refuses to delete a set a rule uses);
- an iptables VM's block with a rule missing or out of order is written again whole where it
  stood, the shared rule just above the first VM rule (repair/order.py).

Pure: the picture (repair/picture.py) is the whole read.
"""

from __future__ import annotations

from fireroute.errors import UsageError
from fireroute.plan.compiler import compile
from fireroute.plan.diff import CREATE, DELETE, MISSING, ORPHAN, REPLACE, SET, Op
from fireroute.plan.steps import IPTABLES, Step
from fireroute.repair import order
from fireroute.repair.picture import Picture
from fireroute.want import clone, cni
from fireroute.want.iptables import conntrack
from fireroute.want.objects import FORWARD6_KEY, FORWARD_KEY
from fireroute.want.shared import nat_member

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.model import Vm
    from fireroute.plan.diff import Index
    from fireroute.want.objects import Obj

KEPT_DELETES = ("nft element", "nft set", "nft chain", "iptables rule")
"""what restore removes of what no lease asks for: what stands in our tables and rules"""
OWN = ("nft element", "iptables rule")
"""a VM's objects that are not of its links (made again whole in a namespace)"""


class Healing:
    """``clear``: what is left of namespaces made again whole (run first, best effort);
    ``steps``: the rest, all or nothing; ``forwarding``: forwarding is switched on
    (``forwarding6``: IPv6's; restore records what it was, kernel/forwarding.py)."""

    __slots__ = ("clear", "steps", "forwarding", "forwarding6")

    def __init__(self) -> None:
        self.clear: list[Step] = []
        self.steps: list[Step] = []
        self.forwarding = False
        self.forwarding6 = False


def _kept(op: Op, want: Index) -> bool:
    """What restore does of the diff: all but the deletes that are not in our tables and
    rules, except an IPv6 address on a tap a lease wants (the kernel's own link-local
    address on a tap with IPv6, kernel/read.py ``_ipv6_taps``)."""
    if op.verb != DELETE:
        return True
    obj = op.obj
    if obj.kind == "addr" and ":" in obj.cidr:  # type: ignore[attr-defined]
        return ("link", (obj.ns, obj.dev)) in want  # type: ignore[attr-defined]
    return obj.kind in KEPT_DELETES and obj.key != conntrack().key


def _whole(pic: Picture, ops: list[Op], healing: Healing) -> list[Op]:
    """A clone or CNI attachment with anything of its links differing: cleared, then every
    object of it made (``ops`` without those it had)."""
    again: list[Vm] = []
    for vm in pic.leases:
        if vm.mode not in ("clone", "cni"):
            continue
        if any(op.obj.vm == vm.name and op.obj.kind not in OWN for op in ops):
            if vm.mode == "cni" and vm.netns not in pic.cur.inside:
                raise UsageError(
                    f'vm "{vm.name}": network namespace "{vm.netns}" is gone; the CNI DEL or '
                    '"fireroute gc" removes the attachment'
                )
            again.append(vm)
    names = {v.name for v in again}
    out = [op for op in ops if not (op.obj.vm in names and op.obj.kind not in OWN)]
    for vm in again:
        healing.clear += compile([Op(DELETE, o, ORPHAN) for o in _cleared(vm)], found=pic.want)
        out += [Op(CREATE, o, MISSING) for o in pic.want.values()
                if o.vm == vm.name and o.kind not in OWN]  # fmt: skip
    return out


def _cleared(vm: Vm) -> list[Obj]:
    """What is deleted to clear what is left of a clone (its namespace, and with it the veth
    to it) or a CNI attachment (its links in the namespace, then the veth's host end)."""
    return [clone.netns(vm)] if vm.mode == "clone" else [cni.veth(vm), cni.tun(vm)]


def _in_place(pic: Picture, op: Op) -> list[Op]:
    """A link of another kind than wanted is set, and what goes with it made where missing;
    a set of another type is declared again (with its elements) in the table's transaction."""
    if op.verb != REPLACE or op.have is None:
        return [op]
    if op.obj.kind == "link" and op.have.link_kind != op.obj.link_kind:  # type: ignore[attr-defined]
        kids = [Op(CREATE, o, MISSING) for o in op.children if (o.kind, o.key) not in pic.have]
        return [Op(SET, op.obj, op.reason, op.have), *kids]
    if op.obj.kind == "nft set":
        return [Op(CREATE, op.obj, op.reason, op.have, op.children)]
    return [op]


def _redeclared(pic: Picture, ops: list[Op]) -> dict[tuple, str]:
    """(family, table) -> what goes first in its transaction: for a set whose type differs,
    every chain of ours in the table flushed, then the set deleted (the chains are declared
    again; a chain not ours goes before, flushed and deleted)."""
    out: dict[tuple, str] = {}
    for op in ops:
        s = op.obj
        if op.verb != REPLACE or s.kind != "nft set" or s.ns is not None:
            continue
        family, table = s.family, s.table  # type: ignore[attr-defined]
        if (family, table) not in out:
            chains = [o.name for k, o in pic.want.items()  # type: ignore[attr-defined]
                      if k[0] == "nft chain" and k[1][:3] == (None, family, table)
                      and k in pic.have]  # fmt: skip
            out[(family, table)] = "".join(f"flush chain {family} {table} {c}\n" for c in chains)
        out[(family, table)] += s.text("delete")
    return out


def _chains_again(pic: Picture, tables: dict[tuple, str], ops: list[Op]) -> list[Op]:
    """The chains of ``tables``, declared again (flushed and their rules added)."""
    have = {op.id for op in ops}
    return [
        Op(SET, o, MISSING)
        for k, o in pic.want.items()
        if k[0] == "nft chain" and o.ns is None and k[1][1:3] in tables and k not in have
    ]


def _iptables(pic: Picture, ops: list[Op]) -> list[Step]:
    """Rules no lease asks for deleted; the blocks of the iptables VMs with a rule missing or
    out of order, and the shared rule, put back in place."""
    removed = [op.obj for op in ops if op.verb == DELETE]
    steps = [
        Step(IPTABLES, r.text("delete"), "remove iptables rule no lease asks for", table=r.table)  # type: ignore[attr-defined]
        for r in removed
    ]
    if any(op.verb != DELETE for op in ops) or pic.twice():
        ipt = [v for v in pic.leases if v.backend == "iptables" and nat_member(v)]
        tagged = [r for r in pic.cur.ipt if r.owner]
        steps += order.heal(
            order.chains(pic.cur.ipt),
            order.index([(r.table, r.saved) for r in tagged]),
            ipt,
            removed,  # type: ignore[arg-type]
        )
    return steps


def _tables_made(pic: Picture, ops: list[Op]) -> set[tuple[str, str]]:
    """The tables of the root namespace made again (none of that name is there: a foreign
    one is refused, ConflictError)."""
    made = set()
    for op in ops:
        t = op.obj
        if op.verb == CREATE and t.kind == "nft table" and t.ns is None:
            pic.cur.table_is_ours(t.family, t.name)  # type: ignore[attr-defined]
            made.add((t.family, t.name))  # type: ignore[attr-defined]
    return made


def healing(pic: Picture, ops: list[Op]) -> Healing:
    """What restore runs to make ``pic``'s kernel what its leases want (``ops``: the diff)."""
    out = Healing()
    ops = _whole(pic, [op for op in ops if _kept(op, pic.want)], out)
    tables = _redeclared(pic, ops)
    ops = [o for op in ops for o in _in_place(pic, op)]
    ops += _chains_again(pic, tables, ops)
    ipt = [op for op in ops if op.obj.kind == "iptables rule" and not op.obj.insert]  # type: ignore[attr-defined]
    written = {id(op) for op in ipt}
    rest = [op for op in ops if id(op) not in written]
    before = pic.cur.forwarding
    out.steps = compile(rest, _tables_made(pic, rest), before, pic.have, pic.cur.forwarding6)
    for s in out.steps:
        first = _first_of(s, tables)
        if first:
            s.text = first + s.text
    out.steps += _iptables(pic, ipt)
    switched = {op.obj.key[1] for op in rest if op.obj.kind == "forwarding"}
    out.forwarding, out.forwarding6 = FORWARD_KEY in switched, FORWARD6_KEY in switched
    return out


def _first_of(step: Step, tables: dict[tuple, str]) -> str:
    """What goes first in ``step``, the transaction of a table declared again."""
    for a in getattr(step, "ops", ()):
        o = a.obj
        if a.verb != DELETE and o.kind == "nft set" and (o.family, o.table) in tables:
            return tables.pop((o.family, o.table))
    return ""
