"""What a NAT VM with IPv6 wants on the host (issue 24, docs/ipv6-plan.md 1.3, 1.4, 1.8): its
tap's IPv6 objects, its elements in the ip6 table of its table's name, that table and IPv6
forwarding while some VM has IPv6; a VM without IPv6 beside it wants exactly what it did."""

from __future__ import annotations

from ipaddress import IPv6Network

from fireroute.model import Vm
from fireroute.want import render
from fireroute.want.nft import elements6, unique_local
from fireroute.want.objects import FORWARD6_KEY, Addr, Forwarding
from fireroute.want.shared import NAT, NAT6, Population, shared
from fireroute.want.tables6 import nat6_layout
from tests.unit.test_plan import ID, vm

POOL6 = IPv6Network("fd3c:9a1e:52b0::/48")


def v6(name: str, ordinal: int, pool: IPv6Network = POOL6, **kw: object) -> Vm:
    """A NAT VM with IPv6: block ``ordinal`` of ``pool`` (a /64)."""
    from fireroute.addressing import block6

    v = vm(name, ordinal, ipv6=True, **kw)
    v.net6 = block6(pool, ordinal)
    return v


def keys(objs: dict) -> set[tuple]:
    return set(objs)


def test_a_v6_tap_has_ipv6_on_its_gateway_and_the_route_to_its_block():
    a = v6("a", 1)
    objs = render.vm(a)
    texts = [o.text("create") for o in objs if o.kind in ("sysctl", "addr", "route")]
    assert texts == [
        "address add 172.16.0.5/30 dev fr-a",
        "net/ipv6/conf/fr-a/disable_ipv6=0",
        "net/ipv6/conf/fr-a/addr_gen_mode=1",
        "address add fe80::1:9a1e:52b0:1/64 dev fr-a nodad",  # its own gateway
        "route add fd3c:9a1e:52b0:1::/64 dev fr-a",
    ]
    a.own_gateway6 = False  # a lease from before gateways of their own keeps fe80::1
    assert "address add fe80::1/64 dev fr-a nodad" in [o.text("create") for o in render.vm(a)]
    # the control: the same VM without IPv6 has it off, and no v6 address or route
    b = vm("a", 1)
    texts = [o.text("create") for o in render.vm(b) if o.kind in ("sysctl", "addr", "route")]
    assert texts == ["address add 172.16.0.5/30 dev fr-a", "net/ipv6/conf/fr-a/disable_ipv6=1"]


def test_a_found_device_is_a_v6_tap_by_its_sysctls_or_its_gateway():
    """want/tap.py ``v6_tap``, the one answer of the reader, a down's read and the diff: what
    ipv6_on makes is one; IPv6 on with the kernel's own link-local (a bridge port, a clone's
    veth) is not, nor IPv6 off whatever else."""
    from fireroute.want.tap import DISABLE6, v6_tap

    a = v6("a", 1)
    made = {o.path: o.value for o in render.vm(a) if o.kind == "sysctl"}
    gateway = [o.cidr for o in render.vm(a) if o.kind == "addr" and ":" in o.cidr]
    assert v6_tap(made[DISABLE6.format("fr-a")], made["net/ipv6/conf/fr-a/addr_gen_mode"])
    assert v6_tap("0", "0", gateway)  # addr_gen_mode changed behind fireroute's back
    assert v6_tap("0", "0", ["fe80::1/64"])  # so, a lease's from before its own gateway
    assert not v6_tap("0", "0", ["fe80::4:1/64"])  # the kernel's link-local: a bridge port
    assert not v6_tap("0", None)
    assert not v6_tap("1", "1", gateway)  # IPv6 off
    assert not v6_tap(None, "1")  # gone


def test_a_v6_vm_has_its_elements_in_the_ip6_table():
    a = v6("a", 1, allow_peers=True, allow_host_ports=[(53, "udp")])
    got = {(e.set, e.value) for e in elements6(a)}
    assert got == {
        ("masq", 'fd3c:9a1e:52b0:1:: . "eth0"'),
        ("egress", '"fr-a" . "eth0"'),
        ("taps", '"fr-a"'),
        ("vms", '"fr-a" . fd3c:9a1e:52b0:1::'),
        ("acct_tx", '"fr-a"'),
        ("acct_rx", '"fr-a"'),
        ("peers", '"fr-a"'),
        ("host_ports", '"fr-a" . "udp" . 53'),
    }
    assert all(e.family == NAT6 and e.table == a.table and e.owner == a.tag for e in elements6(a))
    # its ip table elements are those it had without IPv6
    ip = [o for o in render.vm(a) if o.kind == "nft element" and o.family == NAT]
    same = [o for o in render.vm(vm("a", 1, allow_peers=True, allow_host_ports=[(53, "udp")]))
            if o.kind == "nft element"]  # fmt: skip
    assert ip == same and elements6(vm("a", 1)) == []


def test_a_global_pool_is_routed_not_masqueraded():
    routed = v6("a", 1, pool=IPv6Network("2001:db8:7::/48"))
    assert "masq" not in {e.set for e in elements6(routed)}
    assert "masq" in {e.set for e in elements6(v6("b", 2))}  # the control: a ULA pool's is
    assert unique_local(IPv6Network("fc00::/64")) and unique_local(IPv6Network("fdff::/64"))
    assert not unique_local(IPv6Network("fe80::/64"))
    assert not unique_local(IPv6Network("2001:db8::/64"))


def test_the_ip6_table_and_forwarding_come_with_the_first_v6_vm():
    a, b = v6("a", 1), vm("b", 2)
    want = render.desired([a, b], None, ID)
    table6 = ("nft table", (None, NAT6, a.table))
    fwd6 = ("forwarding", (None, FORWARD6_KEY))
    assert table6 in want and fwd6 in want
    assert want[fwd6] == Forwarding("1", path=FORWARD6_KEY)
    layout = {(o.kind, o.key) for o in nat6_layout(a.table, frozenset())}
    assert layout <= keys(want)
    # the control: without a v6 VM neither is wanted, and the v4 VM's objects are the same
    only4 = render.desired([b], None, ID)
    assert table6 not in only4 and fwd6 not in only4
    assert all(k in want and want[k] == o for k, o in only4.items() if k[0] != "nft set")


def test_the_shape_counts_ipv6():
    a, b = v6("a", 1), vm("b", 2)
    rows = [
        ("nat", "nft", a.table, None, 0, 0, "eth0", 1, 1),
        ("nat", "nft", b.table, None, 0, 0, "eth0", 0, 1),
    ]
    assert Population(rows).counts == Population.of([a, b]).counts
    want = shared(Population(rows), ID)
    assert (NAT6, a.table) in want.tables and want.forwarding6
    less = shared(Population(rows, minus=[a]), ID)
    assert (NAT6, a.table) not in less.tables and not less.forwarding6 and less.forwarding
    # a row of a file without the column is a v4-only shape
    old = [("nat", "nft", b.table, None, 0, 0, "eth0", 1)]
    assert Population(old).counts == Population.of([b]).counts


def test_texts():
    from fireroute.want.tap import link

    tun = link(vm("a", 1))
    assert Addr(tun, "fe80::1/64", nodad=True).text("delete") == "address del fe80::1/64 dev fr-a"
    f = Forwarding("1", "0", path=FORWARD6_KEY)
    assert f.text("set") == "net.ipv6.conf.all.forwarding=1"
    assert f.text("delete") == "net.ipv6.conf.all.forwarding=0"
    assert f.what("set") == "set IPv6 forwarding" and Forwarding("1").what() == (
        "set IPv4 forwarding"
    )


def test_an_ip6_table_keeps_the_parts_it_holds():
    """``held`` reads an ip6 table's parts too (keyed ``(NAT6, table)``), and ``desired``
    keeps them: an ip6 table an up declared whole (it found a table there) holds every part,
    and check called those its VMs did not need not fireroute's (found by the stateful
    property test, tests/unit/test_property_fake.py). Control: without them, the lean table."""
    lean = render.desired([v6("a", 0)], None, ID)
    whole = {**lean, **render.index(nat6_layout("firecracker"))}
    held = render.held(whole)
    assert "out_jump" in held[(NAT6, "firecracker")] and "out_jump" not in held["firecracker"]
    out_jump = ("nft set", (None, NAT6, "firecracker", "out_jump"))
    assert out_jump not in lean
    assert out_jump in render.desired([v6("a", 0)], None, ID, held)
    assert ("nft set", (None, NAT, "firecracker", "out_jump")) not in render.desired(
        [v6("a", 0)], None, ID, held
    )


def test_each_block_has_a_gateway_of_its_own_as_ip_prints_it():
    """addressing.gateway6_text: fe80::1 and the low 48 bits of the block's ordinal, written
    from integers exactly as the kernel's ``ip address`` (and ipaddress) print it, zero
    groups included; distinct for a pool's blocks; never fe80::1 itself."""
    from ipaddress import IPv6Address

    from fireroute.addressing import block6, gateway6_text

    pools = [POOL6, IPv6Network("2001:db8::/32"), IPv6Network("fd00:0:ff00::/48")]
    for pool in pools:
        texts = [gateway6_text(block6(pool, k)) for k in (0, 1, 2, 255, 256, 65535)]
        for t in texts:
            assert t == str(IPv6Address(t)) and IPv6Address(t) in IPv6Network("fe80::/64")
            assert t != "fe80::1"
        assert len(set(texts)) == len(texts)
    assert gateway6_text(IPv6Network("2001:db8::/64")) == "fe80::1:db8:0:0"
    assert gateway6_text(IPv6Network("fd00::/64")) == "fe80::1:0:0:0"
    assert gateway6_text(IPv6Network("fd00:0:0:7::/64")) == "fe80::1:0:0:7"
    assert gateway6_text(IPv6Network("fd3c:9a1e:52b0:1::/64")) == "fe80::1:9a1e:52b0:1"
    small = IPv6Network("2001:db8:0:1::40/122")  # a block smaller than a /64: its ordinal
    assert gateway6_text(small) == str(IPv6Address((0xFE80 << 112) | (1 << 48) | (
        (int(small.network_address) >> 6) & (2**48 - 1))))  # fmt: skip
