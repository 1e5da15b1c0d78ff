"""InProcessExecutor on plans of VMs with IPv6 (docs/ipv6-plan.md, step 8): a tap's gateway
``fe80::1/64`` (nodad) and the route to its /64 go through rtnetlink, the ip table's and the
ip6 table's elements through one nf_tables batch, and the kernel ends as ``ip``/``nft``
leave it: the pair of namespaces of tests/kernel/test_inproc.py, compared with their IPv6
addresses, routes and IPv6 sysctls besides. Each refusal has a succeeding control beside it.
The unit tests at the end check the encodings without root.
"""

# ruff: noqa: F811 (``pair``: the fixture of test_inproc.py, taken as an argument)

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Network

import pytest

from fireroute.kernel import inproc, nftnl, rtnl
from fireroute.model import Options, Vm
from fireroute.plan.ops import Act, OpStep
from fireroute.plan.steps import IP, NFT, SYSCTL
from fireroute.want.netns import Route
from fireroute.want.objects import Addr
from tests.conftest import Host
from tests.kernel.test_inproc import (  # noqa: F401 (pair: the fixture)
    TABLE,
    both,
    down_plan,
    execute,
    ip,
    link,
    op,
    pair,
    settled,
    setup,
    up_plan,
)

POOL6 = IPv6Network("fd3c:9a1e:52b0::/48")


def vm6(name: str, ordinal: int, **kw) -> Vm:
    net = IPv4Network(f"172.16.0.{4 * ordinal}/30")
    net6 = IPv6Network((int(POOL6.network_address) + (ordinal << 64), 64))
    mac = "06:00:AC:10:00:%02X" % (4 * ordinal + 2)
    v = Vm(name, net, f"fr-{name}", mac, "up0", Options(ipv6=True, **kw), "active", net6)
    v.owner = "5ca1ab1e"
    return v


def snapshot6(h: Host) -> dict:
    """The IPv6 side of the taps: their IPv6 addresses (with their flags), the routes
    through them (both families), their IPv6 sysctls, the ip6 table's elements."""
    taps = [n for n in h.links() if n.startswith("fr-")]
    addrs = json.loads(h.run("ip", "-6", "-j", "addr", "show").stdout)
    inet6 = {
        d["ifname"]: sorted(
            (a["local"], a["prefixlen"], bool(a.get("nodad")), a.get("scope"))
            for a in d["addr_info"]
        )
        for d in addrs
        if d["ifname"] in taps
    }
    routes = [
        r
        for family in ("-4", "-6")
        for r in json.loads(h.run("ip", family, "-j", "route", "show", "table", "all").stdout)
        if r.get("dev") in taps
    ]
    sysctls = {
        (t, key): h.run("cat", f"/proc/sys/net/ipv6/conf/{t}/{key}").stdout.strip()
        for t in taps
        for key in ("disable_ipv6", "addr_gen_mode")
    }
    elements = sorted(json.dumps(e) for e in elements6(h))
    return {"addrs": inet6, "routes": routes, "sysctls": sorted(sysctls.items()), "ip6": elements}


def elements6(h: Host, name: str = "vms") -> list:
    """The elements of a set of the ip6 table."""
    for item in h.nft():
        s = item.get("set")
        if s and (s["family"], s["table"], s["name"]) == ("ip6", TABLE, name):
            return list(s.get("elem", []))
    return []


def _uncounted(doc: object) -> object:
    """A listing without packet counts (a tap with IPv6 sends MLD reports as it comes up:
    how many, by the time of the listing, is the kernel's timing, not the executor's)."""
    if isinstance(doc, dict):
        return {k: _uncounted(v) for k, v in doc.items() if k not in ("packets", "bytes")}
    if isinstance(doc, list):
        return [_uncounted(v) for v in doc]
    return doc


def both6(pair, steps, verb: str = "all", in_process: int | None = None) -> dict:
    """test_inproc.py's ``both``, with the IPv6 side compared too (packet counts left out)."""
    a, b = pair
    pa, pb = execute(a, "process", steps, verb), execute(b, "inproc", steps, verb)
    assert (pa["error"], pa["message"]) == (pb["error"], pb["message"])
    assert _uncounted(settled(a)) == _uncounted(settled(b))
    assert snapshot6(a) == snapshot6(b)
    if in_process is not None:
        assert pb["in_process"] == in_process
    return pa


# -- whole per-VM plans -------------------------------------------------------------------
def test_second_v6_vm_up_and_down_entirely_in_process(pair) -> None:
    setup(pair, up_plan(vm6("a", 0), fresh=True))
    b = vm6("b", 1)
    up = up_plan(b, fresh=False)
    own = [s.text for s in up if s.tool == SYSCTL and "/conf/fr-b/" in s.text]
    assert len(own) == 2 and [s.tool for s in up].count(NFT) == 2  # (two tables: one group)
    assert any(s.text.endswith(" nodad") for s in up)
    # its tap; its gateway and route (after the sysctls); both tables' elements, one batch
    assert both6(pair, up, in_process=3)["error"] is None
    have = snapshot6(pair[1])
    assert ("fe80::1:9a1e:52b0:1", 64, True, "link") in have["addrs"]["fr-b"]  # its own
    assert any(r["dst"] == "fd3c:9a1e:52b0:1::/64" for r in have["routes"])
    assert len(have["ip6"]) == 2  # a's and b's
    down = down_plan([b], [vm6("a", 0)])
    assert both6(pair, down, verb="best", in_process=2)["error"] is None
    assert len(snapshot6(pair[1])["ip6"]) == 1


def test_first_v6_vm_up_tables_by_nft(pair) -> None:
    """A fresh table's layout goes to nft; the tap's groups run in-process."""
    out = both6(pair, up_plan(vm6("a", 0), fresh=True), in_process=2)
    assert out["error"] is None
    assert snapshot6(pair[1])["ip6"]


# -- refusals, each beside its control ----------------------------------------------------
def test_route_exists_and_address_on_ipv6_off(pair) -> None:
    made = [op("create", link(n)) for n in ("fr-x", "fr-y")]
    setup(pair, [*made, *(op("set", link(n, up=True)) for n in ("fr-x", "fr-y"))])
    setup(pair, [OpStep(SYSCTL, "net/ipv6/conf/fr-x/disable_ipv6=0", "on", "t")])
    setup(pair, [OpStep(SYSCTL, "net/ipv6/conf/fr-y/disable_ipv6=1", "off", "t")])
    route = Route("fd00:1::/64", None, "fr-x", "route", "t", "t")
    gateway = Addr(link("fr-x"), "fe80::1/64", nodad=True)
    assert both6(pair, [op("create", gateway), op("create", route)], in_process=1)["error"] is None
    out = both6(pair, [op("create", route)], in_process=1)  # there already
    assert out["error"] == "KernelError" and "File exists" in out["message"]
    off = Addr(link("fr-y"), "fe80::1/64", nodad=True)
    out = both6(pair, [op("create", off)], in_process=1)  # IPv6 off on fr-y: refused
    assert out["error"] == "KernelError"
    v4 = Route("10.9.0.0/24", None, "fr-x", "route", "t", "t")  # an IPv4 one: the control
    assert both6(pair, [op("create", v4)], in_process=1)["error"] is None


# -- without root: encodings --------------------------------------------------------------
def test_v6_objects_encode() -> None:
    b = vm6("b", 1)
    steps = [s for s in up_plan(b, fresh=False) if s.tool == IP]
    assert len(steps) == 5  # tap, address, tag; gateway, route
    for s in steps:
        assert inproc.encode(s) is not None, s
    for obj in (
        Addr(link("x"), "fe80::1/129"),
        Addr(link("x"), "fe80::g/64"),
        Route("default", None, "x", "r", "t", "t"),
        Route("fd00::/64", "fe80::2", "x", "r", "t", "t"),  # a gateway: ip reads it
        Route("fd00::/64", None, None, "r", "t", "t"),
    ):
        assert inproc.encode(op("create", obj)) is None, obj
    gone = Route("fd00::/64", None, "x", "r", "t", "t")  # (a big group delete's, first)
    assert inproc.encode(op("delete", gone)) is not None


def test_route_and_address_messages() -> None:
    head = rtnl.rtmsg(rtnl.AF_INET6, 64, rtnl.RT_SCOPE_UNIVERSE)
    assert head == bytes((10, 64, 0, 0, 254, 3, 0, 1)) + bytes(4)  # main, proto boot, unicast
    assert rtnl.rtmsg(rtnl.AF_INET, 24, rtnl.RT_SCOPE_LINK)[6] == 253
    assert rtnl.ifaddrmsg(7, 64, 0, rtnl.AF_INET6, rtnl.IFA_F_NODAD) == bytes(
        (10, 64, 2, 0, 7, 0, 0, 0)
    )
    assert rtnl.packed("fe80::1") == (10, bytes.fromhex("fe80" + "0" * 26 + "01"))


def test_v6_keys_and_both_tables_in_one_batch() -> None:
    t = nftnl.key_type("ifname . ipv6_addr")
    assert t[1] == 32 and nftnl.field_ids(t[0]) == [41, 8]
    key = nftnl.encode_key([41, 8], ['"fr-b"', "fd3c:9a1e:52b0:1::"])
    assert key[16:] == bytes.fromhex("fd3c9a1e52b00001") + bytes(8)
    assert nftnl.decode_key([41, 8], key) == ['"fr-b"', "fd3c:9a1e:52b0:1::"]
    with pytest.raises(nftnl.Unsupported):
        nftnl.encode_key([8], ["172.16.0.2"])
    (step,) = [s for s in up_plan(vm6("b", 1), fresh=False) if s.tool == NFT][:1]
    (six,) = [s for s in up_plan(vm6("b", 1), fresh=False) if s.tool == NFT][1:]
    tables = nftnl.of_steps([step, six])
    assert tables is not None and [(o.family, o.table) for o in tables] == [
        ("ip", TABLE),
        ("ip6", TABLE),
    ]
    assert tables[1].declared is not None and tables[1].declared["vms"] == "ifname . ipv6_addr"
    mixed = OpStep(NFT, "x", "x", ops=(Act("set", step.ops[0].obj),))  # type: ignore[attr-defined]
    assert nftnl.of_steps([step, mixed]) is None


@pytest.mark.parametrize("addrgen", ["none", None])
def test_a_link_with_carrier_brought_up_with_addrgenmode_none_gets_no_link_local(pair, addrgen):
    """A CNI attachment's host end has carrier as soon as it is up (its far end is): brought
    up in-process with ``addrgenmode none``, as by ``ip``, the kernel makes no link-local
    address of its own on it (sent with the flags, the mode came too late on a link brought
    up right after it was made, so it goes in a message of its own first:
    tests/e2e/test_cni_e2e.py's CHECK with a booted dual-stack guest found the address). The
    link is made and brought up in one plan, milliseconds apart, as an ADD does (a link a
    second old no longer shows it). The control: brought up without it, the kernel's address
    is there in both."""
    from fireroute.plan.steps import Step
    from fireroute.want.objects import Link

    made = [ip("link add fr-h type veth peer name fr-far"), ip("link set dev fr-far up")]
    between = Step(SYSCTL, "net/ipv6/conf/fr-far/disable_ipv6=0", "a sysctl", "t")  # (its own
    # group: the set after it is the in-process executor's, the two lines before go to ip)
    host_end = Link("fr-h", "veth", "t", "t", "x", group=None, made=False, addrgen=addrgen)
    both(pair, [*made, between, op("set", host_end)], in_process=1)
    for h in pair:
        kernel_ll = [
            a
            for d in json.loads(h.run("ip", "-6", "-j", "addr", "show", "dev", "fr-h").stdout)
            for a in d.get("addr_info", [])
            if a.get("scope") == "link"
        ]
        assert bool(kernel_ll) is (addrgen is None), kernel_ll
