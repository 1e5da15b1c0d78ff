"""Wanted objects as the steps that create them: the one printer of their command lines (a
step carries the operations it does, :attr:`OpStep.ops`, which the fake kernel applies).
plan/compiler.py turns a diff's operations into steps with the same printer."""

from __future__ import annotations

from fireroute.plan.steps import IP, NFT, SYSCTL, Step
from fireroute.want.objects import Link, Obj

TYPE_CHECKING = False
if TYPE_CHECKING:  # dispatched on ``kind``: a NAT VM's command imports no kind it does not use
    from collections.abc import Sequence
    from typing import Any

    from fireroute.want.tables import NftChain, NftTable

    Index = dict[tuple, Obj]

CREATE, SET, REPLACE, DELETE = "create", "set", "replace", "delete"  # (plan/diff.py's verbs)


class Act:
    """One operation a step does: ``verb`` (create, set, delete) to ``obj``."""

    __slots__ = ("verb", "obj")

    def __init__(self, verb: str, obj: Any) -> None:
        self.verb = verb
        self.obj = obj

    def __repr__(self) -> str:
        return f"Act({self.verb}, {self.obj!r})"


class OpStep(Step):
    """A step with the operations it does, in order (``ops``)."""

    __slots__ = ("ops",)

    def __init__(self, *args: Any, ops: Sequence[Act] = (), **kw: Any) -> None:
        """``Step``'s arguments, and ``ops``."""
        super().__init__(*args, **kw)
        self.ops = tuple(ops)


def delete_step(obj: Obj) -> Step:
    return OpStep(
        IP, obj.text("delete"), obj.what("delete"), obj.vm, netns=obj.ns, ops=(Act(DELETE, obj),)
    )


def create_steps(objs: list[Obj], within: str | None = None) -> list[Step]:
    """In creation order: a namespace; per link (in the order given) its add (undone by
    deleting it), its addresses, then the line that tags it and brings it up; the routes;
    the sysctls; the nft tables. ``within``: the objects fill that namespace, made just
    before: each ``ip`` line is one step of setting it up, undone with it."""
    return _block([Act(CREATE, o) for o in objs], within)


def _block(acts: list[Act], within: str | None = None) -> list[Step]:
    """:func:`create_steps` of operations: a link only set has no add line."""

    def ip(a: Act, verb: str, undo: tuple[Step, ...] = ()) -> Step:
        o = a.obj
        what = o.what(verb) if within is None else f'set up namespace "{within}"'
        done = Act(SET if verb == SET else CREATE, o)
        return OpStep(IP, o.text(verb), what, o.vm, undo, netns=o.ns, ops=(done,))

    def of(kind: str) -> list[Act]:
        return [a for a in acts if a.obj.kind == kind]

    steps = [ip(n, CREATE, (delete_step(n.obj),)) for n in of("netns")]
    addrs = of("addr")
    links = of("link")
    for a in links:
        link = a.obj
        if a.verb == CREATE and link.made:
            steps.append(ip(a, CREATE, (delete_step(link),) if within is None else ()))
        steps += [ip(x, CREATE) for x in addrs if x.obj.key[:2] == link.key]
        steps.append(ip(a, SET))
    linked = {a.obj.key for a in links}
    steps += [ip(x, CREATE) for x in addrs if x.obj.key[:2] not in linked]
    steps += [ip(r, CREATE) for r in of("route")]
    steps += [sysctl_step(s.obj) for s in of("sysctl")]
    chains: list[NftChain] = [a.obj for a in of("nft chain")]
    for t in of("nft table"):
        table: NftTable = t.obj
        own = [c for c in chains if (c.family, c.table) == (table.family, table.name)]
        made = [Act(CREATE, table), *(Act(CREATE, c) for c in own)]
        steps.append(
            OpStep(NFT, table.script(own), table.what(), table.vm, netns=table.ns, ops=made)
        )
    tables = {(t.obj.family, t.obj.name) for t in of("nft table")}
    steps += [_chain_step(c) for c in chains if (c.family, c.table) not in tables]
    return steps


def sysctl_step(s: Obj) -> Step:
    return OpStep(SYSCTL, s.text("set"), s.what("set"), s.vm, netns=s.ns, ops=(Act(SET, s),))


def _chain_step(c: NftChain) -> Step:
    """A chain of a table that stays, declared again (flushed, its rules added)."""
    from fireroute.want.tables import declare

    where = f"{c.family} {c.table}"
    text = declare(c.family, c.table, [], [c])
    return OpStep(
        NFT, text, f"declare chain {c.name} of {where}", c.vm, netns=c.ns, ops=[Act(SET, c)]
    )


class LinkGroup(Obj):
    """Every link of interface group ``group`` (in ``ns``): what ``link del group`` deletes
    at once, the kernel batching their unregister (links are moved there first,
    :func:`regroup_step`)."""

    __slots__ = ("group",)
    kind = "link group"

    def __init__(self, group: int, vm: str | None = None, ns: str | None = None) -> None:
        super().__init__(ns, "", vm)
        self.group = group

    @property
    def key(self) -> tuple:
        return (self.ns, self.group)

    def text(self, verb: str = DELETE) -> str:
        assert verb == DELETE
        return f"link del group {self.group}"

    def what(self, verb: str = DELETE) -> str:
        return f"delete the links of group {self.group}"


def regroup_step(link: Link, group: int, what: str) -> Step:
    """``link set dev X group G`` alone: the link moved to ``group`` (nothing else set)."""
    moved = Link(link.name, link.link_kind, link.owner, link.vm, "", link.ns, group=group, up=False)
    return OpStep(IP, moved.text(SET), what, link.vm, netns=link.ns, ops=(Act(SET, moved),))


def group_delete_step(group: int, what: str, vm: str | None = None, ns: str | None = None) -> Step:
    """``link del group G``: every link of the group deleted at once."""
    g = LinkGroup(group, vm, ns)
    return OpStep(IP, g.text(DELETE), what, vm, netns=ns, ops=(Act(DELETE, g),))
