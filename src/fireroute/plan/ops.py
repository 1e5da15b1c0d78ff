"""Wanted objects as the steps that create them: the one printer of their command lines."""

from __future__ import annotations

from fireroute.plan.steps import IP, SYSCTL, Step
from fireroute.want.objects import Addr, Link, Obj, Sysctl


def delete_step(obj: Link) -> Step:
    return Step(IP, obj.text("delete"), obj.what("delete"), obj.vm, netns=obj.ns)


def create_steps(objs: list[Obj]) -> list[Step]:
    """In creation order: per link (in the order given) its add (undone by deleting it), its
    addresses, then the line that tags it and brings it up; the sysctls after every link."""
    steps: list[Step] = []
    for link in objs:
        if not isinstance(link, Link):
            continue
        steps.append(
            Step(
                IP,
                link.text("create"),
                link.what("create"),
                link.vm,
                (delete_step(link),),
                netns=link.ns,
            )
        )
        for a in objs:
            if isinstance(a, Addr) and a.key[:2] == link.key:
                steps.append(Step(IP, a.text("create"), a.what("create"), a.vm, netns=a.ns))
        steps.append(Step(IP, link.text("set"), link.what("set"), link.vm, netns=link.ns))
    steps += [sysctl_step(s) for s in objs if isinstance(s, Sysctl)]
    return steps


def sysctl_step(s: Sysctl) -> Step:
    return Step(SYSCTL, s.text(), s.what(), s.vm, netns=s.ns)
