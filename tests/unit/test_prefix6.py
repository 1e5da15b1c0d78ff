"""``--prefix6`` and ``--proxy-ndp`` without a kernel (docs/ipv6.md, proxy NDP): the blocks'
formula, the refusals (one line each), the options' text unchanged at their defaults, the
request doors, what want/ renders for a sub-/64 and a proxied VM (and not for a /64 one), the
ip6 table's sub-/64 part, the reader's proxy entries, check's words, and an RA with no prefix
below a /64 (pinned against the kernel by tests/kernel/test_prefix6.py)."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Network

import pytest

from fireroute import addressing, request
from fireroute.errors import UsageError
from fireroute.kernel.read import Current, Source, _proxies
from fireroute.kernel.run import Result
from fireroute.model import Options, Vm
from fireroute.plan.diff import CREATE, DELETE, Op
from fireroute.plan.words import words
from fireroute.render import ra
from fireroute.want import render
from fireroute.want.objects import NeighProxy, Sysctl
from fireroute.want.tables import ALL_PARTS
from fireroute.want.tables6 import SUB64, nat6_layout, parts6_of

ROUTED = IPv6Network("2001:db8:200::/64")


def sub64(**kw: object) -> Options:
    return Options(uplink="eth0", ipv6=True, pool6=ROUTED, prefix6=96, **kw)  # type: ignore[arg-type]


def vm(options: Options, ordinal: int = 0) -> Vm:
    net6 = addressing.block6(options.pool6 or ROUTED, ordinal, options.prefix6)
    net = IPv4Network(f"172.16.0.{4 * ordinal}/30")
    return Vm("a", net, "fr-a", "06:00:AC:10:00:02", "eth0", options, "active", net6)


def test_the_formula_below_a_64():
    assert addressing.block6(ROUTED, 0, 96) == IPv6Network("2001:db8:200::/96")
    assert addressing.block6(ROUTED, 1, 96) == IPv6Network("2001:db8:200::1:0:0/96")
    assert addressing.block6_count(ROUTED, 96) == 2**32
    assert addressing.block6_count(IPv6Network("2001:db8:200::/120"), 126) == 64
    with pytest.raises(Exception, match="no /126 block number 64"):
        addressing.block6(IPv6Network("2001:db8:200::/120"), 64, 126)
    v = vm(sub64(), 1)
    assert str(v.guest6) == "2001:db8:200::1:0:2/96"  # the block's ::2, its prefix length


REFUSED = {
    "a ULA pool": (dict(ipv6=True, pool6=IPv6Network("fd00:5::/48"), prefix6=80), "global --pool6"),
    "the own pool": (dict(ipv6=True, prefix6=80), "--prefix6 needs a global --pool6"),
    "proxy, ULA": (
        dict(ipv6=True, pool6=IPv6Network("fd00:5::/48"), proxy_ndp=True),
        "--proxy-ndp",
    ),
    "proxy without ipv6": (dict(proxy_ndp=True), "--proxy-ndp needs --ipv6 in nat mode"),
    "prefix6 63": (dict(ipv6=True, pool6=ROUTED, prefix6=63), 'invalid --prefix6 "63"'),
    "prefix6 127": (dict(ipv6=True, pool6=ROUTED, prefix6=127), 'invalid --prefix6 "127"'),
    "pool too small": (
        dict(ipv6=True, pool6=IPv6Network("2001:db8::/100"), prefix6=96),
        "smaller than one VM's /96 block",
    ),
}


@pytest.mark.parametrize(("kw", "said"), list(REFUSED.values()), ids=list(REFUSED))
def test_the_refusals_are_one_line(kw: dict, said: str):
    with pytest.raises(UsageError) as e:
        Options(uplink="eth0", **kw)
    assert said in str(e.value) and "\n" not in str(e.value)


def test_what_is_taken():
    assert sub64().prefix6 == 96
    assert Options(uplink="eth0", ipv6=True, pool6=ROUTED, proxy_ndp=True).prefix6 == 64
    small = IPv6Network("2001:db8::/100")  # (a pool smaller than a /64, with blocks in it)
    assert Options(uplink="eth0", ipv6=True, pool6=small, prefix6=120).pool6 == small


def test_the_options_text_is_unchanged_at_the_defaults():
    plain = Options(uplink="eth0", ipv6=True, pool6=ROUTED)
    assert "prefix6" not in plain.identity() and "proxy_ndp" not in plain.identity()
    o = sub64(proxy_ndp=True)
    assert o.identity()["prefix6"] == 96 and o.identity()["proxy_ndp"] is True
    again = Options.from_identity(json.loads(json.dumps(o.identity())))
    assert again == o and again.prefix6 == 96 and again.proxy_ndp


def test_the_request_doors():
    fields = {"ipv6": True, "pool6": str(ROUTED), "prefix6": 96, "proxy_ndp": True}
    o = request.options(fields)
    assert (o.prefix6, o.proxy_ndp) == (96, True)
    assert request.options(request.fields_of(o)) == o
    assert request.options({**fields, "prefix6": "/100"}).prefix6 == 100
    bad_fields = (
        ({"prefix6": "x"}, 'invalid --prefix6 "x"'),
        ({"prefix6": True}, "invalid --prefix6"),
        ({"proxy_ndp": "yes"}, "invalid --proxy-ndp: expected true or false"),
    )
    for bad, said in bad_fields:
        with pytest.raises(UsageError, match=said):
            request.options({**fields, **bad})
    # a pool too small for the VM's block is told with the block the VM would have: /64 by
    # default, /N with --prefix6 N (the options know it, the pool's parser does not)
    assert request.pool6_arg("2001:db8::/127").prefixlen == 127
    for extra, block in (({}, "/64"), ({"prefix6": 96}, "/96")):
        with pytest.raises(UsageError, match=f"smaller than one VM's {block} block"):
            request.options({"ipv6": True, "pool6": "2001:db8::/127", **extra})


def test_a_sub64_vm_is_keyed_by_its_64_and_checked_exactly():
    objs = render.vm(vm(sub64(), 1))
    elems = {(o.set, o.value) for o in objs if o.kind == "nft element" and o.family == "ip6"}
    assert ("vms", '"fr-a" . 2001:db8:200::') in elems  # (the /64 its block is in)
    assert ("taps128", '"fr-a"') in elems
    assert ("vms128", '"fr-a" . 2001:db8:200::1:0:2') in elems
    assert not any(s == "masq" for s, _ in elems)  # (a global pool: routed)
    assert not [o for o in objs if o.kind == "neigh proxy"]  # (no --proxy-ndp)


def test_a_proxied_vm_wants_its_entry_and_the_uplinks_proxy_ndp():
    objs = render.vm(vm(sub64(proxy_ndp=True), 1))
    (p,) = [o for o in objs if isinstance(o, NeighProxy)]
    assert p.key == (None, "eth0", "2001:db8:200::1:0:2") and p.owner == vm(sub64()).tag
    assert p.text("create") == "neigh add proxy 2001:db8:200::1:0:2 dev eth0"
    assert p.text("delete") == "neigh del proxy 2001:db8:200::1:0:2 dev eth0"
    (s,) = [o for o in objs if isinstance(o, Sysctl) and o.path.endswith("proxy_ndp")]
    assert s.text() == "net/ipv6/conf/eth0/proxy_ndp=1"
    plain = Options(uplink="eth0", ipv6=True, pool6=ROUTED)
    assert not [o for o in render.vm(vm(plain)) if o.kind == "neigh proxy"]


def test_the_sub64_part_only_where_wanted():
    lean = nat6_layout("firecracker", ALL_PARTS)
    assert not [o for o in lean if "128" in getattr(o, "name", "") or "128" in str(o)]
    full = nat6_layout("firecracker", ALL_PARTS | {SUB64})
    names = {getattr(o, "name", None) for o in full}
    assert {"taps128", "vms128"} <= names
    assert parts6_of(["vms128"]) == {SUB64} and parts6_of(["vms"]) == frozenset()


def test_the_reader_takes_the_entries_of_its_guests_only():
    v = vm(sub64(proxy_ndp=True), 1)
    out = [
        {"dst": "2001:db8:200::1:0:2", "dev": "eth0", "proxy": None},
        {"dst": "2001:db8:999::5", "dev": "eth0", "proxy": None},  # (someone else's)
    ]

    def runner(argv: list[str], stdin: str | None) -> Result:
        assert argv == ["ip", "-6", "-j", "neigh", "show", "proxy"]
        return Result(0, json.dumps(out), "")

    cur = Current()
    _proxies(cur, Source(runner, read=lambda path: "1"), [v])
    assert [o.key for o in cur.objs.values() if o.kind == "neigh proxy"] == [
        (None, "eth0", "2001:db8:200::1:0:2")
    ]
    assert cur.get("sysctl", (None, "net/ipv6/conf/eth0/proxy_ndp")) is not None
    asked: list[list[str]] = []
    own = vm(Options(uplink="eth0", ipv6=True))
    own.net6 = IPv6Network("fd00:5::/64")  # (the state file's own pool: masqueraded)
    ula = vm(Options(uplink="eth0", ipv6=True, pool6=IPv6Network("fd00:6::/48")))
    _proxies(Current(), Source(lambda a, s: asked.append(a) or Result(0, "[]", "")), [own, ula])
    assert asked == []  # (no VM of a given global pool: nothing read, as before)


def test_an_entry_for_no_leases_guest_of_our_pool_on_the_uplink_is_an_orphan():
    """The kernel keeps no tag: an entry is this state file's by its address, the ``::2`` of
    a block of a pool its VMs were given, on their uplink (a VM without --proxy-ndp is
    enough to know the pool); the others are someone else's, not read."""
    v = vm(sub64(), 1)
    v.owner = "ab12"
    out = [
        {"dst": "2001:db8:200::5:0:2", "dev": "eth0"},  # block 5's guest: no lease's
        {"dst": "2001:db8:200::5:0:3", "dev": "eth0"},  # (no guest's address)
        {"dst": "2001:db8:200::6:0:2", "dev": "eth1"},  # (not the uplink)
        {"dst": "2001:db8:999::2", "dev": "eth0"},  # (outside the pool)
    ]
    cur = Current()
    _proxies(cur, Source(lambda a, s: Result(0, json.dumps(out), ""), read=lambda p: "0"), [v])
    [p] = [o for o in cur.objs.values() if o.kind == "neigh proxy"]
    assert (p.key, p.owner, p.vm) == (
        (None, "eth0", "2001:db8:200::5:0:2"),
        "ab12:proxy 2001:db8:200::5:0:2",
        "proxy 2001:db8:200::5:0:2",
    )
    assert words(Op(DELETE, p, "orphan")) == [
        '"eth0" answers neighbour solicitations for 2001:db8:200::5:0:2, which no lease asks for'
    ]


def test_check_says_it():
    p = NeighProxy("eth0", "2001:db8:200::2", "x:a", "a")
    assert words(Op(CREATE, p, "missing")) == [
        '"eth0" does not answer neighbour solicitations for 2001:db8:200::2 (proxy NDP)'
    ]


def test_an_ra_below_a_64_offers_no_prefix():
    mac = "06:00:ac:10:00:02"
    full = ra.advertisement(IPv6Network("2001:db8:200::/64"), mac)
    bare = ra.advertisement(IPv6Network("2001:db8:200::/96"), mac)
    assert len(full) == 64 and len(bare) == 32  # (the 32-byte prefix information left out)
    assert bare == full[:16] + full[48:]  # the header (router lifetime: the route), MTU, MAC
    assert bare[6:8] == full[6:8] != b"\0\0"
    # a --proxy-ndp VM's /64 is offered no prefix either: upstream reaches its ::2 alone
    assert ra.advertisement(IPv6Network("2001:db8:200::/64"), mac, offer=False) == bare


def test_the_daemon_takes_them_as_the_operators():
    from fireroute.serve.config import NotAllowed, ServerConfig

    fixed = {"ipv6": True, "pool6": str(ROUTED), "prefix6": 96, "proxy_ndp": True}
    config = ServerConfig(fixed=fixed)
    o = request.options(config.options({"dns": ["192.0.2.53"]}))
    assert (o.prefix6, o.proxy_ndp, o.pool6) == (96, True, ROUTED)
    with pytest.raises(NotAllowed, match="prefix6"):  # (not a client's to give)
        ServerConfig(client_options=["ipv6"]).options({"ipv6": True, "prefix6": 96})
    with pytest.raises(UsageError, match="--proxy-ndp needs a global --pool6"):
        ServerConfig(fixed={"ipv6": True, "proxy_ndp": True})  # (checked at load)
