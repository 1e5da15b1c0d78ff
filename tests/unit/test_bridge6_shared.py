"""A bridge shared by two state files with IPv6 guests in both, in the diff alone (pinned
against the kernel by tests/kernel/test_bridge6_two_files.py): the bridge's ``fe80::1`` and
IPv6 forwarding stay while a guest's /64 of any state file is routed onto a bridge of
fireroute's, and go with the last; the reader takes another file's guest's route onto a
bridge as nobody's, a forgotten guest of its own pools as its orphan."""

from __future__ import annotations

from ipaddress import IPv6Network

from fireroute import owner
from fireroute.kernel.read import Current, _bridge_routes
from fireroute.plan.diff import DELETE, diff
from fireroute.want.netns import Route
from fireroute.want.objects import FORWARD6_KEY, Addr, Forwarding, Link

ONE, TWO = "aaaa", "bbbb"
BR = Link("br0", "bridge", owner.tag(ONE, owner.bridge_name("br0")), None, "")
GATEWAY = Addr(BR, "fe80::1/64", nodad=True)
OTHERS = Route("fd00:2::/64", None, "br0", "", "", None)  # (two's guest: nobody's in one)


def index(*objs) -> dict:
    return {(o.kind, o.key): o for o in objs}


def deleted(current: dict) -> set[str]:
    """What one's diff deletes when its last guest with IPv6 goes and the bridge stays (a
    v4-only guest of one keeps it)."""
    return {op.obj.kind for op in diff(current, index(BR), instance=ONE) if op.verb == DELETE}


def test_the_gateway_and_forwarding6_stay_while_another_files_v6_guest_is_on_the_bridge():
    fwd = Forwarding("1", "0", path=FORWARD6_KEY)
    assert {"addr", "forwarding"} <= deleted(index(BR, GATEWAY, fwd))  # the control: alone
    kept = deleted(index(BR, GATEWAY, fwd, OTHERS))
    assert "addr" not in kept and "forwarding" not in kept and "route" not in kept


def test_a_route_onto_a_bridge_is_ours_by_its_block():
    cur = Current()
    cur.add(Route("fd00:1::/64", None, "br0", "", BR.owner, None))  # one's, forgotten
    cur.add(Route("fd00:2::/64", None, "br0", "", BR.owner, None))  # two's guest
    _bridge_routes(cur, [], ONE, [IPv6Network("fd00:1::/48")])
    routes = {r.dst: (r.owner, r.vm) for r in cur.of(Route, None)}
    assert routes == {
        "fd00:1::/64": (f"{ONE}:route fd00:1::/64", "route fd00:1::/64"),
        "fd00:2::/64": ("", None),
    }
