"""What ``gc`` removes once the half-made leases are down: the diff's deletes of what is this
state file's (or, for a lost state file, that one's) and no lease wants, in today's down
order (plan/compiler.py): its tagged links (a bridge it made with no port left), namespaces,
set elements and iptables rules, a table nothing else uses, the shared conntrack rule once
no other tagged rule stays (want/shared.py: while some NAT member on the iptables backend
wants it), forwarding back once no link of fireroute's stays.

What stands in our tables untagged, or under another state file's tag, is restore's business
(it is drift of this state file's VMs, or another's own); so is a leased VM's object that
differs. Pure: the picture is the whole read.
"""

from __future__ import annotations

from fireroute.plan.compiler import compile
from fireroute.plan.diff import DELETE, ORPHAN, Op
from fireroute.plan.steps import Step
from fireroute.repair.picture import Picture

COLLECTED = (
    "link", "netns", "nft element", "nft table", "iptables rule", "forwarding", "route",
    "neigh proxy",
)  # fmt: skip
"""what gc removes of what is its own and no lease wants (a route on its own: a bridge guest's
/64 onto a bridge that stays; others go with their link or namespace; a proxy entry on the
uplink for a guest's address of our pools, kernel/read.py ``_proxies``: the uplink's
proxy_ndp is given back after it, kernel/scope.py ``done``)"""


def leftovers(ops: list[Op]) -> list[Op]:
    """Of the diff, what gc removes."""
    return [
        op
        for op in ops
        if op.verb == DELETE and op.reason == ORPHAN and (op.obj.kind in COLLECTED or _v6(op))
    ]


def _v6(op: Op) -> bool:
    """An IPv6 address of ours no lease wants: a bridge's gateway for its guests with IPv6
    (want/bridge.py gateway6), left on a bridge that stays (a tap's goes with it)."""
    return op.obj.kind == "addr" and ":" in op.obj.cidr  # type: ignore[attr-defined]


def sweep(pic: Picture) -> list[Step]:
    """The steps removing ``pic``'s leftovers (run best effort)."""
    return compile(leftovers(pic.diff()), found=pic.have)
