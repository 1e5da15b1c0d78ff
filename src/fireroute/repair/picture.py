"""What check, restore and gc compare: the kernel as read (kernel/read.py) and what the state
file's leases want (want/render.py), as the two indexes of the one diff (plan/diff.py)."""

from __future__ import annotations

from fireroute.errors import ConflictError
from fireroute.kernel.read import Current, Source, as_wanted, read
from fireroute.plan.diff import ALL, Op, Scope, diff
from fireroute.want import render
from fireroute.want.objects import FORWARD6_KEY, Forwarding

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.model import Vm
    from fireroute.plan.diff import Index

__all__ = ["Picture", "picture"]


class Picture:
    """The kernel read (``cur``; ``have``: its objects, forwarding among them, each compared
    as the wanted one is), what ``leases`` want (``want``) for the state file ``instance``."""

    __slots__ = ("cur", "have", "want", "instance", "leases")

    def __init__(self, cur: Current, want: Index, instance: str, leases: list[Vm]) -> None:
        self.cur = cur
        self.want = want
        self.instance = instance
        self.leases = leases
        self.have: Index = dict(cur.objs)
        for k, w in want.items():
            found = self.have.get(k)
            if found is not None:
                self.have[k] = as_wanted(found, w)

    def diff(self, scope: Scope = ALL) -> list[Op]:
        return diff(self.have, self.want, scope, self.instance)

    def twice(self) -> list:
        """The wanted iptables rules (of a VM) that stand more than once in their chain: the
        index of the read holds each once."""
        seen: set[tuple] = set()
        out = []
        for r in self.cur.ipt:
            k = (r.kind, r.key)
            if k in seen and r.vm is not None and k in self.want and r not in out:
                out.append(r)
            seen.add(k)
        return out

    def links(self) -> set[str]:
        """The root namespace's link names."""
        return set(self.cur.links(None))


def picture(
    source: Source,
    leases: list[Vm],
    instance: str,
    before: str | None = None,
    before6: str | None = None,
    own6: str | None = None,
) -> Picture:
    """Read everything (inside the namespaces of ``leases``) and render what ``leases`` want.
    ``before``: forwarding's value before fireroute switched it on (as recorded), the value
    it goes back to once nothing wants it; ``before6``: IPv6 forwarding's; ``own6``: the
    state file's own IPv6 pool (as recorded)."""
    cur = read(source, leases, instance, own6)
    held = render.held(cur.objs)  # a table's parts stay once made (want/tables.py PARTS)
    pic = Picture(cur, render.desired(leases, None, instance, held), instance, leases)
    if cur.forwarding is not None:
        fwd = Forwarding(cur.forwarding, before)
        pic.have[(fwd.kind, fwd.key)] = fwd
    if cur.forwarding6 is not None:
        fwd6 = Forwarding(cur.forwarding6, before6, path=FORWARD6_KEY)
        pic.have[(fwd6.kind, fwd6.key)] = fwd6
    return pic


def readable(pic: Picture, leases: list[Vm]) -> None:
    """ConflictError when a table fireroute's iptables rules go into is one iptables-nft cannot
    read (written with nft since) while a lease has such rules: check could not tell whether
    they are there, and restore would write them twice. (gc and teardown go on: they remove
    what they see, and a down deletes a leaving VM's rules there unseen.)"""
    if pic.cur.ipt_unreadable and any(v.backend == "iptables" for v in leases):
        raise ConflictError(
            f'iptables table "{pic.cur.ipt_unreadable[0]}" holds what iptables-nft cannot read '
            "(written with nft): fireroute's iptables rules in it can be neither checked nor "
            "restored"
        )
