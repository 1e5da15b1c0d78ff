"""A group delete of many taps of VMs with IPv6 deletes their IPv6 routes first (the /64s and
the kernel's own: ``fe80::/64``, and in the local table the gateway, its anycast and
``ff00::/8``), in the same ``ip`` batch (plan/compiler.py ``_taps_down``: the kernel walks
the whole IPv6 routing tree once per device it deletes; bench/tap_delete6.py). The threshold
is lowered here so that three VMs take that path; both executors (``ip`` and in-process) run
the same plan in a pair of namespaces (tests/kernel/test_inproc.py's) and must end alike,
with nothing of the VMs left. Beside it, the control below the threshold (the taps take
their routes themselves), the batch run again (idempotent: each line finds its object gone),
and an up whose last step fails, undone whole (its route's delete now runs in-process too).
"""

# ruff: noqa: F811 (``pair``: the fixture of test_inproc.py, taken as an argument)

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fireroute.kernel import inproc
from fireroute.plan import compiler
from fireroute.plan.steps import IP
from fireroute.want.netns import Route
from fireroute.want.objects import Addr
from tests.conftest import Host
from tests.kernel.test_inproc import (  # noqa: F401 (pair: the fixture)
    down_plan,
    execute,
    link,
    op,
    pair,
    setup,
    up_plan,
)
from tests.kernel.test_inproc6 import both6, snapshot6, vm6

VMS = [vm6(n, k) for k, n in enumerate(("a", "b", "c"))]


def up_three(pair) -> None:
    setup(pair, up_plan(VMS[0], fresh=True))
    for v in VMS[1:]:
        setup(pair, up_plan(v, fresh=False))


def v6_routes(h: Host) -> list[str]:
    """The IPv6 routes of the main table through a tap of fireroute's (but the kernel's
    ``fe80::/64`` of each)."""
    doc = json.loads(h.run("ip", "-6", "-j", "route", "show").stdout)
    return [
        r["dst"] for r in doc if str(r.get("dev", "")).startswith("fr-") and r["dst"] != "fe80::/64"
    ]


def left(h: Host) -> dict:
    """What of the VMs is left: taps, their routes, the ip6 table."""
    tables = [i["table"]["name"] for i in h.nft() if "table" in i and i["table"]["family"] == "ip6"]
    return {"taps": [n for n in h.links() if n.startswith("fr-")], "ip6": tables}


def routes6_of_taps(h: Host) -> list[str]:
    """Every IPv6 route through a tap of fireroute's, in any table (the kernel's own too)."""
    doc = json.loads(h.run("ip", "-6", "-j", "route", "show", "table", "all").stdout)
    ours = [r for r in doc if str(r.get("dev", "")).startswith("fr-")]
    return [f"{r.get('type', 'unicast')} {r['dst']}" for r in ours]


def test_batch_down_deletes_v6_routes_first(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    up_three(pair)
    assert len(v6_routes(pair[0])) == 3 and len(v6_routes(pair[1])) == 3
    kinds = {r.split()[0] for r in routes6_of_taps(pair[0])}
    assert {"local", "multicast"} <= kinds, kinds  # (the kernel's own, to be deleted too)
    monkeypatch.setattr(compiler, "ROUTES6_FIRST", 3)
    down = down_plan(VMS)
    ip = [s.text for s in down if s.tool == IP]
    assert [t.split()[:2] for t in ip[:15]] == [["route", "del"]] * 15  # 5 a tap
    assert sum(" table local" in t for t in ip[:15]) == 9
    assert ip[15:18] == [f"link set dev fr-{n} group 4152" for n in "abc"]
    assert ip[-1] == "link del group 4152" and len(ip) == 19
    assert all(inproc.encode(s) is not None for s in down if s.tool == IP)
    # the route lines alone take every IPv6 route of the taps, in both executors
    routes = [s for s in down if s.tool == IP and s.text.startswith("route del ")]
    assert both6(pair, routes, verb="best", in_process=1)["error"] is None
    assert [routes6_of_taps(h) for h in pair] == [[], []]
    assert both6(pair, down, verb="best")["error"] is None
    for h in pair:
        assert left(h) == {"taps": [], "ip6": []}
        assert v6_routes(h) == []
    # again: every line finds its object gone, which a down takes as done
    again = [s for s in down if s.tool == IP]
    assert both6(pair, again, verb="best")["error"] is None


def test_below_threshold_taps_take_their_routes(pair) -> None:
    """The control: a group delete of three taps (the real threshold: hundreds) has no
    route lines, and the kernel takes the routes with the taps."""
    up_three(pair)
    down = down_plan(VMS)
    assert not [s for s in down if s.tool == IP and s.text.startswith("route ")]
    assert both6(pair, down, verb="best")["error"] is None
    for h in pair:
        assert left(h) == {"taps": [], "ip6": []} and v6_routes(h) == []


def test_failed_up_undoes_v6_route_in_process(pair) -> None:
    """An up whose last line fails is undone whole: the route it made is deleted (by the
    in-process executor through rtnetlink, by ``ip`` in the other), the address too."""
    setup(pair, [op("create", link("fr-x")), op("set", link("fr-x", up=True))])
    for h in pair:
        h.run("sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/fr-x/disable_ipv6")
        h.run("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/fr-x/addr_gen_mode")
    gateway = Addr(link("fr-x"), "fe80::1/64", nodad=True)
    made = Route("fd00:1::/64", None, "fr-x", "route", "t", "t")
    compiled = compiler.compile([_Op("create", gateway), _Op("create", made)])
    assert all(s.undo for s in compiled)
    taken = Route("fd00:2::/64", None, "fr-x", "route", "t", "t")
    setup(pair, [op("create", taken)])
    steps = [*compiled, *compiler.compile([_Op("create", taken)])]  # (File exists)
    out = both6(pair, steps)
    assert out["error"] == "KernelError" and "File exists" in out["message"]
    for h in pair:
        assert v6_routes(h) == ["fd00:2::/64"]  # the one there before; the new one undone
        assert snapshot6(h)["addrs"].get("fr-x", []) == []
    # the control: the same up on a tap without the clash is made whole
    setup(pair, [op("delete", taken)])
    assert both6(pair, steps)["error"] is None
    assert all(sorted(v6_routes(h)) == ["fd00:1::/64", "fd00:2::/64"] for h in pair)


class _Op:
    """A diff operation as plan/compiler.py takes it."""

    def __init__(self, verb: str, obj: object) -> None:
        self.verb, self.obj, self.have, self.children = verb, obj, None, ()


def test_route_delete_encodes() -> None:
    """Without root: a device route's delete is encoded (as ``ip route del`` sends it:
    any protocol, scope and type); one through a gateway is left to ``ip``."""
    assert inproc.encode(op("delete", Route("fd00::/64", None, "x", "r", "t", "t"))) is not None
    via = Route("fd00::/64", "fe80::2", "x", "r", "t", "t")
    assert inproc.encode(op("delete", via)) is None


LOWERED = """
import sys
from fireroute.plan import compiler
compiler.ROUTES6_FIRST = 2  # (three VMs take the big batch's path)
from fireroute.entry import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_cli_down_takes_the_routes_first_path(host: Host) -> None:
    """The CLI's own down (its reads of the kernel, kernel/scope.py, not a test's plan): with
    the threshold lowered, the plan deletes the three /64 routes and the kernel's own routes
    of the taps before the taps' group, and
    the down leaves nothing; the control, at the shipped threshold, has no route line."""
    host.fireroute("up", "--count", "3", "--prefix", "v", "--ipv6")
    assert len(v6_routes(host)) == 3
    assert "ip route del " not in host.fireroute("down", "--all", "--dry-run").stdout  # control

    def lowered(*args: str) -> str:
        argv = ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", LOWERED]
        env = {**os.environ, "FIREROUTE_STATE": str(host.state)}
        out = subprocess.run([*argv, *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    plan = lowered("down", "--all", "--dry-run").splitlines()
    routes = [i for i, line in enumerate(plan) if line.startswith("ip route del ")]
    group = [i for i, line in enumerate(plan) if "link del group" in line]
    assert len(routes) == 15 and group and max(routes) < min(group), plan  # 5 a tap
    assert sum(plan[i].endswith(" table local") for i in routes) == 9, plan
    lowered("down", "--all")
    assert left(host) == {"taps": [], "ip6": []} and v6_routes(host) == []
    assert host.fireroute("check").returncode == 0
