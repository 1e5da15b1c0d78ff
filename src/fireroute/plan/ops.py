"""Wanted objects as the steps that create them: the one printer of their command lines."""

from __future__ import annotations

from fireroute.plan.steps import IP, NFT, SYSCTL, Step
from fireroute.want.objects import Addr, Link, Netns, Obj, Route, Sysctl


def delete_step(obj: Link | Netns) -> Step:
    return Step(IP, obj.text("delete"), obj.what("delete"), obj.vm, netns=obj.ns)


def create_steps(objs: list[Obj], within: str | None = None) -> list[Step]:
    """In creation order: a namespace; per link (in the order given) its add (undone by
    deleting it), its addresses, then the line that tags it and brings it up; the routes;
    the sysctls; the nft tables. ``within``: the objects fill that namespace, made just
    before: each ``ip`` line is one step of setting it up, undone with it."""

    def ip(obj: Link | Addr | Route | Netns, verb: str, undo: tuple[Step, ...] = ()) -> Step:
        what = obj.what(verb) if within is None else f'set up namespace "{within}"'
        return Step(IP, obj.text(verb), what, obj.vm, undo, netns=obj.ns)

    steps = [ip(n, "create", (delete_step(n),)) for n in objs if isinstance(n, Netns)]
    for link in objs:
        if not isinstance(link, Link):
            continue
        if link.made:
            steps.append(ip(link, "create", (delete_step(link),) if within is None else ()))
        steps += [ip(a, "create") for a in objs if isinstance(a, Addr) and a.key[:2] == link.key]
        steps.append(ip(link, "set"))
    steps += [ip(r, "create") for r in objs if isinstance(r, Route)]
    steps += [sysctl_step(s) for s in objs if isinstance(s, Sysctl)]
    if any(t.kind == "nft table" for t in objs):  # (a NAT VM's command does without them)
        from fireroute.want.tables import NftChain, NftTable

        chains = [c for c in objs if isinstance(c, NftChain)]
        tables = [t for t in objs if isinstance(t, NftTable)]
        steps += [Step(NFT, t.text(chains), t.what(), t.vm, netns=t.ns) for t in tables]
    return steps


def sysctl_step(s: Sysctl) -> Step:
    return Step(SYSCTL, s.text(), s.what(), s.vm, netns=s.ns)
