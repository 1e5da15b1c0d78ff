"""Egress policy and published ports of a NAT VM with IPv6 (issue 24 step 11, docs/ipv6-plan.md
1.12): its IPv6 CIDRs, ``--egress public``'s NOT_PUBLIC6 and the uplink's IPv6 networks,
``--egress none``'s ::/0 and its ports as elements of the ip6 table (each family's in its own
table), the ip6 table's lazy parts coming with them, the addresses a port cannot be published
on over IPv6 refused in one line; a VM without IPv6 (or a v4-only policy) wants what it did."""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network, ip_network

import pytest

from fireroute import request
from fireroute.errors import UsageError
from fireroute.model import NOT_PUBLIC, NOT_PUBLIC6, Published, merged
from fireroute.want import render
from fireroute.want.nft import address_text, cidr_text, elements, elements6, shard
from fireroute.want.shared import NAT, NAT6
from fireroute.want.tables6 import nat6_layout
from tests.unit.test_plan import vm
from tests.unit.test_want_v6 import v6

K = shard("fr-a")
GUEST6 = "fd3c:9a1e:52b0:1::2"


def pub(*specs: str) -> list[Published]:
    return [Published.parse(t) for t in specs]


def values(elems: list, name: str) -> list[str]:
    return [e.value for e in elems if e.set == name]


def test_deny_and_allow_out_go_to_their_familys_table():
    a = v6("a", 1, deny_out=["10.0.0.0/8", "2000::/16"], allow_out=["2000:1::/32", "10.1.0.0/16"])
    six, four = elements6(a), elements(a)
    assert values(six, "out_jump") == [f'"fr-a" : jump out_{K}']
    assert values(six, f"out_deny_{K}") == ['"fr-a" . 2000::/16']
    assert values(six, f"out_allow_{K}") == ['"fr-a" . 2000:1::/32']
    assert values(four, f"out_deny_{K}") == ['"fr-a" . 10.0.0.0/8']
    assert values(four, f"out_allow_{K}") == ['"fr-a" . 10.1.0.0/16']
    assert all(e.family == NAT6 for e in six) and all(e.family == NAT for e in four)
    # the control: a v4-only policy gives the ip6 table no jump (its IPv6 is not policed)
    b = v6("b", 2, deny_out=["10.0.0.0/8"])
    assert not [e for e in elements6(b) if e.set.startswith("out_")]


def test_egress_public_denies_not_public6_and_the_uplinks_v6_networks():
    a = v6("a", 1, egress="public", host_nets=["192.0.2.0/24", "2001:db8:100::/64", "2a00::/64"])
    denied = values(elements6(a), f"out_deny_{K}")
    want = merged([*NOT_PUBLIC6, IPv6Network("2a00::/64")])  # (2001:db8::/32 holds the other)
    assert denied == [f'"fr-a" . {cidr_text(n)}' for n in want]
    nets = [ip_network(v.split(" . ")[1]) for v in denied]
    for addr in ("fd12::1", "fe80::1", "fec0::1", "ff02::1", "::1", "::ffff:10.0.0.1",
                 "2001:db8::1", "2a00::5", "2001:db8:100::9"):  # fmt: skip
        assert any(ip_network(addr).subnet_of(n) for n in nets), addr  # type: ignore[arg-type]
    for addr in ("2000::1", "2a00:1::5", "2606:4700::1"):  # the control: public ones pass
        assert not any(ip_network(addr).subnet_of(n) for n in nets), addr  # type: ignore[arg-type]
    four = values(elements(a), f"out_deny_{K}")  # IPv4 as before: its own list, its networks
    assert four == [f'"fr-a" . {cidr_text(n)}' for n in merged([*NOT_PUBLIC, "192.0.2.0/24"])]


def test_egress_none_denies_every_v6_destination():
    a = v6("a", 1, egress="none", allow_out=["2000:1::/32"])
    assert values(elements6(a), f"out_deny_{K}") == ['"fr-a" . ::/0']
    assert values(elements6(a), f"out_allow_{K}") == ['"fr-a" . 2000:1::/32']
    assert values(elements(a), f"out_deny_{K}") == ['"fr-a" . 0.0.0.0/0']


def test_a_published_port_answers_on_v6_addresses_to_the_guests_v6_address():
    ports = pub("8080:80", "127.0.0.1:2222:22", "192.0.2.1:53:53/udp", "[2001:db8::7]:8443:443")
    a = v6("a", 1, publish=ports)
    assert values(elements6(a), "pub_any") == [f'"tcp" . 8080 : {GUEST6} . 80']
    # an IPv4 address's port has no IPv6 image ([::1] cannot be forwarded); an IPv6 one's
    # is the ip6 table's only
    assert values(elements6(a), "pub_addr") == [f'2001:db8::7 . "tcp" . 8443 : {GUEST6} . 443']
    assert values(elements(a), "pub_any") == ['"tcp" . 8080 : 172.16.0.6 . 80']
    assert values(elements(a), "pub_addr") == [
        '127.0.0.1 . "tcp" . 2222 : 172.16.0.6 . 22',
        '192.0.2.1 . "udp" . 53 : 172.16.0.6 . 53',
    ]


def test_the_ip6_tables_lazy_parts_come_with_the_elements_that_need_them():
    lean = {o.key[-1] for o in render.desired([v6("a", 1)], None, "5ca1ab1e").values()
            if o.kind in ("nft set", "nft chain") and o.key[1] == NAT6}  # fmt: skip
    assert "pub_any" not in lean and "out_jump" not in lean and f"out_{K}" not in lean
    full = render.desired([v6("a", 1, deny_out=["2000::/16"], publish=pub("8080:80"))], None, "x")
    six = {o.key[-1] for o in full.values()
           if o.kind in ("nft set", "nft chain") and o.key[1] == NAT6}  # fmt: skip
    assert {"pub_any", "pub_addr", "pub_pre", "pub_out", "out_jump", "out_reject"} <= six
    assert {f"out_{K}", f"out_deny_{K}", f"out_allow_{K}"} <= six
    chains = {o.key[-1]: o for o in full.values() if o.kind == "nft chain" and o.key[1] == NAT6}
    assert chains[f"out_{K}"].rules == (  # type: ignore[attr-defined]
        f"iifname . ip6 daddr @out_deny_{K} iifname . ip6 daddr != @out_allow_{K} jump out_reject",
    )
    assert any("vmap @out_jump" in r for r in chains["forward"].rules)  # type: ignore[attr-defined]
    assert (
        "fib daddr type local ip6 daddr != ::1 dnat ip6 to meta l4proto . th dport map "
        "@pub_any" in chains["pub_pre"].rules
    )  # type: ignore[attr-defined]
    types = {o.key[-1]: o.type for o in full.values() if o.kind == "nft set" and o.key[1] == NAT6}  # type: ignore[attr-defined]
    assert types[f"out_deny_{K}"] == "ifname . ipv6_addr; flags interval"
    assert types["pub_any"] == "inet_proto . inet_service : ipv6_addr . inet_service"
    # every part of the ip6 table is the ip table's, under the same names
    whole = {o.key[-1] for o in nat6_layout("firecracker")[1:]}
    assert six <= whole


def test_a_vm_without_ipv6_wants_what_it_did():
    """Its v6 CIDRs (taken: a guest without IPv6 cannot reach them anyway) make no element."""
    a = vm("a", 1, deny_out=["10.0.0.0/8", "2000::/16"], egress="public", publish=pub("8080:80"))
    b = vm("a", 1, deny_out=["10.0.0.0/8"], egress="public", publish=pub("8080:80"))
    assert [e.text("add") for e in elements(a)] == [e.text("add") for e in elements(b)]
    assert elements6(a) == []


@pytest.mark.parametrize(
    "spec, said",
    [
        ("[::1]:8080:80", "a port on [::1] cannot be forwarded (IPv6 has no route_localnet)"),
        ("[fe80::1]:8080:80", "fe80::1 is no host address to publish on"),
        ("[ff02::1]:8080:80", "ff02::1 is no host address to publish on"),
        ("[::]:8080:80", ":: is no host address to publish on"),
        ("[::ffff:10.0.0.1]:8080:80", "is no host address to publish on"),
        ("[2001:db8::zz]:8080:80", '"2001:db8::zz" is no IPv6 address'),
        ("[2001:db8::1]8080:80", "expected [ADDR:]HOSTPORT:GUESTPORT"),
        ("2001:db8::1:8080:80", "expected [ADDR:]HOSTPORT:GUESTPORT"),
    ],
)
def test_a_port_on_no_publishable_v6_address_is_refused_in_one_line(spec, said):
    with pytest.raises(UsageError, match=re.escape(said)) as e:
        Published.parse(spec)
    assert "\n" not in str(e.value)
    # the controls: a host IPv6 address and 127.0.0.1 are taken
    assert str(Published.parse("[2001:DB8:0::1]:8080:80")) == "[2001:db8::1]:8080:80/tcp"
    assert str(Published.parse("127.0.0.1:8080:80")) == "127.0.0.1:8080:80/tcp"


def test_a_port_on_a_v6_address_needs_ipv6():
    with pytest.raises(UsageError, match="is on a host IPv6 address: it needs --ipv6"):
        request.options({"publish": ["[2001:db8::1]:8080:80"]})
    request.options({"ipv6": True, "publish": ["[2001:db8::1]:8080:80"]})  # the control
    with pytest.raises(UsageError, match="takes the host port"):  # one port, every address
        request.options({"ipv6": True, "publish": ["8080:80", "[2001:db8::1]:8080:81"]})


def test_v6_cidrs_are_parsed_strictly():
    with pytest.raises(UsageError, match='invalid --deny-out "2001:db8::1/32"'):
        request.options({"ipv6": True, "deny_out": ["2001:db8::1/32"]})
    with pytest.raises(UsageError, match='invalid --allow-out "2001:db8::/129"'):
        request.options({"ipv6": True, "allow_out": ["2001:db8::/129"]})
    o = request.options({"ipv6": True, "deny_out": ["2001:db8::1", "2001:db8::/32"]})
    assert o.deny_out == (IPv6Network("2001:db8::/32"),)  # merged


def test_merged_keeps_each_family_apart():
    nets = [ip_network("2000::/16"), IPv4Network("10.0.0.0/8"), ip_network("2000:1::/32"),
            IPv4Network("10.1.0.0/16")]  # fmt: skip
    assert [str(n) for n in merged(nets)] == ["10.0.0.0/8", "2000::/16"]


@pytest.mark.parametrize(
    "addr, printed",
    [
        ("::ffff:0:0", "::ffff:0.0.0.0"),  # as nft lists it (inet_ntop)
        ("::ffff:a00:1", "::ffff:10.0.0.1"),
        ("::a00:1", "::10.0.0.1"),
        ("::1", "::1"),
        ("::", "::"),
        ("::1:0", "::0.1.0.0"),  # (the first 96 bits zero, the last 32 above 0xffff)
        ("2001:db8::1", "2001:db8::1"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_addresses_are_written_as_nft_lists_them(addr, printed):
    assert address_text(addr) == printed


def test_the_uplinks_v6_networks_are_read_for_a_vm_with_ipv6_only():
    """up reads the uplink's networks for ``--egress public``: IPv6's (less link-local, which
    NOT_PUBLIC6 holds) only when the VM has IPv6, so a v4-only VM records what it did."""
    import json

    from fireroute.kernel import observe
    from fireroute.kernel.run import Result

    doc = [{"ifname": "eth0", "addr_info": [
        {"family": "inet", "local": "192.0.2.5", "prefixlen": 24, "scope": "global"},
        {"family": "inet6", "local": "2a00:100::2", "prefixlen": 64, "scope": "global"},
        {"family": "inet6", "local": "fe80::5", "prefixlen": 64, "scope": "link"},
    ]}]  # fmt: skip

    def runner(argv: list[str], stdin: str | None = None) -> Result:
        assert stdin == "address show dev eth0\n"
        return Result(0, json.dumps(doc), "")

    assert [str(n) for n in observe.link_networks("eth0", runner)] == ["192.0.2.0/24"]
    six = observe.link_networks("eth0", runner, ipv6=True)
    assert [str(n) for n in six] == ["192.0.2.0/24", "2a00:100::/64"]
