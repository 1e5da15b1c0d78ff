"""The fake host (kernel/fake.py) against the kernel: the same operations, built from want/
objects (a NAT tap, a bridge port, a clone namespace, a table whose set a rule uses), go to a
fake and, as each object's own command line, to a throwaway namespace; each step's outcome
(ok, exists, missing, busy) and the links and addresses afterwards must agree.

Each operation is one process (``ip -batch``, ``tc -batch``, ``nft -f``, ``sysctl -w``), so an
outcome is that one line's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Network

import pytest

from fireroute.kernel import fake, kinds
from fireroute.kernel.fake import Fake, FakeSet
from fireroute.kernel.kinds import BUSY, EXISTS, MISSING, OK
from fireroute.model import Options, Vm
from fireroute.plan.ops import group_delete_step, regroup_step
from fireroute.want import clone, tap
from fireroute.want.netns import Route, TcRedirect
from fireroute.want.nft import NftElement
from fireroute.want.objects import DOOMED_GROUP, Addr, Link
from fireroute.want.tables import NftChain, NftTable
from tests.conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root to create network namespaces")

OWNER = f"{os.getpid():08x}"[-8:]
ROOT = f"frfk-{OWNER}"
"""the namespace standing for the host's root namespace (the fake's ``ns`` None)"""


def vm(name: str, ordinal: int, **kw) -> Vm:
    net = IPv4Network(f"172.16.0.{4 * ordinal}/30")
    mac = "06:00:AC:10:00:%02X" % (4 * ordinal + 2)
    v = Vm(name, net, f"fr-{name}", mac, "eth0", Options(**kw))
    v.owner = OWNER
    if v.mode == "clone":
        v.netns_name = f"frfk-{OWNER}-{name}"
    return v


def run(argv: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=text, capture_output=True, text=True, timeout=10)


class Kernel:
    """Operations as command lines, run in the throwaway namespaces."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def do(self, verb: str, obj) -> str:
        ns = ROOT if obj.ns is None else obj.ns
        text = fake.line(obj, verb)
        tool = fake.tool(obj)
        if obj.kind == "netns":  # a namespace's name is the machine's, not a namespace's
            argv = ["ip", "-batch", "-"]
        elif tool in ("ip", "tc"):
            argv = [tool, "-n", ns, "-batch", "-"]
        elif tool == "nft":
            argv = ["ip", "netns", "exec", ns, "nft", "-f", "-"]
        else:
            argv = ["ip", "netns", "exec", ns, "sysctl", "-qw", text]
        res = run(argv, text if text.endswith("\n") else text + "\n")
        if res.returncode == 0:
            return OK
        self.errors.append(res.stderr.strip())
        return kinds.classify(res.stderr + res.stdout)

    def links(self, ns: str | None) -> tuple[set, set]:
        """(ns, name, master, up) of each link, (ns, name, cidr) of each IPv4 address."""
        out = json.loads(run(["ip", "-n", ns or ROOT, "-j", "addr", "show"]).stdout or "[]")
        links = {(ns, d["ifname"], d.get("master"), "UP" in d.get("flags", [])) for d in out}
        addrs = {
            (ns, d["ifname"], f"{a['local']}/{a['prefixlen']}")
            for d in out
            for a in d.get("addr_info", [])
            if a.get("family") == "inet"
        }
        return links, addrs


def fake_links(f: Fake, ns: str | None) -> tuple[set, set]:
    objs = [o for o in f.read().values() if o.ns == ns]
    links = {(ns, o.name, o.master, o.up) for o in objs if o.kind == "link"}
    addrs = {(ns, o.dev, o.cidr) for o in objs if o.kind == "addr"}
    return links, addrs


@pytest.fixture
def both():
    names = [ROOT, *(f"frfk-{OWNER}-{n}" for n in ("c",))]
    for n in names:
        run(["ip", "netns", "del", n])
    assert run(["ip", "netns", "add", ROOT]).returncode == 0
    f = Fake()
    f.seed(Link("lo", "loopback", "", None, "", group=None, up=False, made=False))
    try:
        yield f, Kernel()
    finally:
        for n in names:
            run(["ip", "netns", "del", n])


def steps(f: Fake, k: Kernel, ops: list[tuple[str, object]]) -> list[str]:
    """Each operation on both; their outcomes must agree step by step."""
    seen = []
    for n, (verb, obj) in enumerate(ops):
        (mine,) = f.apply([Op(verb, obj)])
        real = k.do(verb, obj)
        assert mine == real, f"step {n}: {verb} {obj!r}: fake {mine}, kernel {real} {k.errors}"
        seen.append(real)
    return seen


def same_links(f: Fake, k: Kernel, *spaces: str | None) -> None:
    for ns in spaces:
        assert fake_links(f, ns) == k.links(ns), ns


class Op:
    def __init__(self, verb: str, obj) -> None:
        self.verb, self.obj = verb, obj


def test_nat_tap(both):
    f, k = both
    link, addr, v6 = tap.tap(vm("a", 0))
    beyond = Route("10.9.0.0/24", "172.16.0.2", None, "via the guest", "", None)
    lost = Addr(Link("fr-q", "tun", "", None, ""), "10.8.0.1/24")
    seen = steps(
        f,
        k,
        [
            ("create", addr),
            ("create", link),
            ("create", link),
            ("create", addr),
            ("create", addr),
            ("create", v6),
            ("create", beyond),  # the tap is down: no connected network yet
            ("set", link),
            ("create", beyond),
            ("create", lost),
        ],
    )
    assert seen == [MISSING, OK, EXISTS, OK, EXISTS, OK, MISSING, OK, OK, MISSING]
    same_links(f, k, None)
    seen = steps(f, k, [("delete", link), ("delete", link), ("create", v6), ("delete", addr)])
    assert seen == [OK, MISSING, MISSING, MISSING]
    same_links(f, k, None)


HOLD = """
import fcntl, os, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0002 | 0x1000))
print("held", flush=True)
sys.stdin.read()
"""
"""attach to a tap as a VMM does (TUNSETIFF, tap, no packet information) and keep it"""


def test_a_held_tap(both):
    """A tap a VMM has open: ``link del`` takes it all the same; another of its name is
    refused while it is there."""
    f, k = both
    link, addr, _ = tap.tap(vm("a", 0))
    assert steps(f, k, [("create", link), ("set", link), ("create", addr)]) == [OK, OK, OK]
    argv = ["ip", "netns", "exec", ROOT, sys.executable, "-c", HOLD, link.name]
    vmm = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert vmm.stdout is not None and vmm.stdout.readline() == "held\n"
        f.hold(link.name)
        assert steps(f, k, [("create", link), ("delete", link)]) == [EXISTS, OK]
        assert not f.held
        same_links(f, k, None)
    finally:
        vmm.communicate("", timeout=10)


def test_bridge_port(both):
    f, k = both
    b = vm("b", 1, mode="bridge", bridge="br9", dhcp=True)
    (port,) = tap.tap(b)
    br = Link("br9", "bridge", f"{OWNER}:bridge:br9", None, f"fireroute:{OWNER}:bridge:br9")
    plain = Link(port.name, "tun", port.owner, port.vm, port.alias, uid=0)
    other = Link("fr-z", "tun", "", None, "", uid=0)
    redirect = TcRedirect("fr-z", port.name, "", None, None)
    seen = steps(
        f,
        k,
        [
            ("set", port),
            ("create", plain),
            ("set", port),  # no bridge yet
            ("create", br),
            ("set", br),
            ("create", Addr(br, "10.77.0.1/24")),
            ("set", port),
            ("create", other),
            ("create", redirect),
            ("create", redirect),
        ],
    )
    assert seen == [MISSING, OK, MISSING, OK, OK, OK, OK, OK, OK, EXISTS]
    same_links(f, k, None)
    assert steps(f, k, [("delete", br), ("delete", br), ("delete", other)]) == [OK, MISSING, OK]
    same_links(f, k, None)  # the port stays, without its bridge
    assert steps(f, k, [("delete", redirect)]) == [MISSING]  # it went with its device


def test_clone_namespace(both):
    f, k = both
    c = vm("c", 3, mode="clone", clone_address="10.200.0.7")
    objs = clone.clone(c)
    ns = c.netns
    by = {(o.kind, o.key): o for o in objs}
    veth, netns = clone.host_veth(c), clone.netns(c)
    far = by["link", (ns, "veth0")]
    default = by["route", (ns, "default")]
    ops = [("create", veth), ("create", netns), ("create", netns)]
    for o in objs[1:]:
        if o is default:
            ops += [("create", default), ("set", far)]
        if o.kind != "link" or o.made:
            ops.append(("create", o))
        if o.kind == "link" and o is not far:
            ops.append(("set", o))
    ops.append(("create", default))
    seen = steps(f, k, ops)
    assert seen[:3] == [MISSING, OK, EXISTS] and seen[-1] == EXISTS
    assert seen.count(MISSING) == 2 and seen.count(OK) == len(ops) - 4  # (the early route)
    same_links(f, k, None, ns)
    table = clone.table(c)
    assert steps(f, k, [("create", table), ("set", table)]) == [EXISTS, OK]
    assert steps(f, k, [("delete", veth), ("delete", by["route", (None, "10.200.0.7/32")])]) == [
        OK,
        MISSING,  # it went with the host's end of the veth
    ]
    same_links(f, k, None, ns)  # the far end went too, and the route through it
    assert steps(f, k, [("create", default)]) == [MISSING]
    assert steps(f, k, [("delete", netns), ("delete", netns), ("create", table)]) == [
        OK,
        MISSING,
        MISSING,
    ]
    same_links(f, k, None)


def test_a_table_its_set_and_elements(both):
    f, k = both
    t = NftTable("ip", "fk", "make table", OWNER, None, None)
    s = FakeSet(None, "ip", "fk", "taps", "ifname")
    head = "type filter hook forward priority 0; policy accept;"
    chain = NftChain(t, "forward", head, ("iifname @taps drop",))

    def element(value: str, set_name: str = "taps", who: str = "a") -> NftElement:
        return NftElement("ip", "fk", set_name, value, f"{OWNER}:{who}", who)

    a = element('"fr-a"')
    seen = steps(
        f,
        k,
        [
            ("create", a),
            ("create", t),
            ("create", a),
            ("create", s),
            ("create", chain),
            ("create", a),
            ("create", element('"fr-a"', who="b")),  # there already: nothing changes
            ("create", element('"fr-a"', set_name="nope")),
            ("delete", s),  # a rule uses it
            ("delete", a),
            ("delete", a),
            ("delete", chain),
            ("delete", s),
            ("create", s),
            ("create", a),
            ("delete", t),
            ("create", a),
        ],
    )
    assert seen[:9] == [MISSING, OK, MISSING, OK, OK, OK, OK, MISSING, BUSY]
    assert seen[9:] == [OK, MISSING, OK, OK, OK, OK, OK, MISSING]


def test_a_group_delete(both):
    """``link del group G`` (plan/ops.py's steps): an empty group is missing; the group's
    links go, a veth's far end (in no group) with its end, an address with its tap; a link
    of no group stays; a group holding the loopback is refused whole."""
    f, k = both
    a, addr, _ = tap.tap(vm("a", 0))
    b = tap.tap(vm("b", 1))[0]
    keep = Link("fr-z", "tun", "", None, "", uid=0)
    veth = Link("fr-v", "veth", "", None, "", peer=(None, "fr-w"))
    made = [("create", o) for o in (a, b, keep, veth)] + [("set", a), ("create", addr)]
    assert steps(f, k, made) == [OK] * 6
    (gone,) = group_delete_step(DOOMED_GROUP, "delete").ops
    marks = [("set", regroup_step(o, DOOMED_GROUP, "mark").ops[0].obj) for o in (a, b, veth)]
    seen = steps(f, k, [("delete", gone.obj), *marks, ("delete", gone.obj)])
    assert seen == [MISSING, OK, OK, OK, OK]
    same_links(f, k, None)
    assert {n for _, n, _, _ in k.links(None)[0]} == {"lo", "fr-z"}  # (the control stayed)
    lo = Link("lo", "loopback", "", None, "", group=None, up=False, made=False)
    marks = [("set", regroup_step(o, DOOMED_GROUP, "mark").ops[0].obj) for o in (keep, lo)]
    assert steps(f, k, [*marks, ("delete", gone.obj)]) == [OK, OK, kinds.OTHER]
    same_links(f, k, None)


def test_a_v6_nat_tap(both):
    """A NAT tap with IPv6 (issue 24): its IPv6 address refused while the tap's
    ``disable_ipv6`` is 1 (plan F11), taken once it is 0; its route missing while the tap
    is down; both gone with the tap."""
    from ipaddress import IPv6Network

    f, k = both
    v = vm("a", 0, ipv6=True)
    v.net6 = IPv6Network("fd3c:9a1e:52b0:1::/64")
    link, _, on, gen, ll, route = tap.tap(v)
    off = tap.device_sysctl(v, tap.DISABLE6, "", "1")
    seen = steps(
        f,
        k,
        [
            ("create", link),
            ("set", off),
            ("create", ll),  # refused: IPv6 is off on the tap
            ("set", on),
            ("set", gen),
            ("create", ll),
            ("create", ll),
            ("create", route),  # the tap is down
            ("set", link),
            ("create", route),
            ("create", route),
        ],
    )
    assert seen[2] not in (OK, MISSING)
    assert seen[:2] + seen[3:] == [OK, OK, OK, OK, OK, EXISTS, MISSING, OK, OK, EXISTS]
    assert v6_state(f) == v6_kernel() == ({"fe80::1:9a1e:52b0:1/64"}, {"fd3c:9a1e:52b0:1::/64"})
    assert steps(f, k, [("delete", link), ("create", route)]) == [OK, MISSING]
    assert v6_state(f) == v6_kernel() == (set(), set())


def v6_state(f: Fake) -> tuple[set, set]:
    objs = f.read().values()
    return (
        {o.cidr for o in objs if o.kind == "addr" and ":" in o.cidr},
        {o.dst for o in objs if o.kind == "route" and ":" in o.dst},
    )


def v6_kernel() -> tuple[set, set]:
    out = json.loads(run(["ip", "-n", ROOT, "-6", "-j", "addr", "show"]).stdout or "[]")
    addrs = {f"{a['local']}/{a['prefixlen']}" for d in out for a in d.get("addr_info", [])}
    out = json.loads(run(["ip", "-n", ROOT, "-6", "-j", "route", "show"]).stdout or "[]")
    return addrs, {r["dst"] for r in out if r.get("protocol") != "kernel"}
