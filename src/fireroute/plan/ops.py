"""Wanted objects as the steps that create them: the one printer of their command lines."""

from __future__ import annotations

from fireroute.plan.steps import IP, NFT, SYSCTL, Step

TYPE_CHECKING = False
if TYPE_CHECKING:  # dispatched on ``kind``: a NAT VM's command imports no kind it does not use
    from fireroute.want.objects import Obj
    from fireroute.want.tables import NftChain, NftTable


def delete_step(obj: Obj) -> Step:
    return Step(IP, obj.text("delete"), obj.what("delete"), obj.vm, netns=obj.ns)


def create_steps(objs: list[Obj], within: str | None = None) -> list[Step]:
    """In creation order: a namespace; per link (in the order given) its add (undone by
    deleting it), its addresses, then the line that tags it and brings it up; the routes;
    the sysctls; the nft tables. ``within``: the objects fill that namespace, made just
    before: each ``ip`` line is one step of setting it up, undone with it."""

    def ip(obj: Obj, verb: str, undo: tuple[Step, ...] = ()) -> Step:
        what = obj.what(verb) if within is None else f'set up namespace "{within}"'
        return Step(IP, obj.text(verb), what, obj.vm, undo, netns=obj.ns)

    def of(kind: str) -> list[Obj]:
        return [o for o in objs if o.kind == kind]

    steps = [ip(n, "create", (delete_step(n),)) for n in of("netns")]
    for link in of("link"):
        if link.made:  # type: ignore[attr-defined]
            steps.append(ip(link, "create", (delete_step(link),) if within is None else ()))
        steps += [ip(a, "create") for a in of("addr") if a.key[:2] == link.key]
        steps.append(ip(link, "set"))
    steps += [ip(r, "create") for r in of("route")]
    steps += [sysctl_step(s) for s in of("sysctl")]
    chains: list[NftChain] = of("nft chain")  # type: ignore[assignment]
    tables: list[NftTable] = of("nft table")  # type: ignore[assignment]
    steps += [Step(NFT, t.script(chains), t.what(), t.vm, netns=t.ns) for t in tables]
    return steps


def sysctl_step(s: Obj) -> Step:
    return Step(SYSCTL, s.text("set"), s.what("set"), s.vm, netns=s.ns)
