"""Neighbour advertisements at a bridge port (docs/ipv6.md, bridge), with real packets: guests
a and b on one bridge, configured by the guest script (tests/kernel/test_bridge6.py's lab). An
advertisement from a naming b's address, or the gateway ``fe80::1``, never reaches b (nor the
host), and nothing a sends from ``fe80::1`` does; beside them the controls, a's advertisements
naming its own address, another of its /64 (a SLAAC one) and its link-local address, reach b.
Each drop counted by the bridge table's rules."""

from __future__ import annotations

import sys
from ipaddress import IPv6Address, IPv6Network

from tests.conftest import sh
from tests.kernel.test_bridge6 import ICMP6_SEEN, BridgeLab, lab  # noqa: F401 - the fixture

NA_SEND = """
import socket, struct, sys
dev, kind, source = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
if source != "-":
    s.bind((source, 0, 0, socket.if_nametoindex(dev)))
for target in sys.argv[4:]:  # an unsolicited advertisement (override), or an echo request
    t = socket.inet_pton(socket.AF_INET6, target)
    msg = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + t if kind == "na" else \\
        struct.pack("!BBHHH", 128, 0, 0, 7, 1) + t
    for _ in range(2):
        s.sendto(msg, ("ff02::1", 0, 0, socket.if_nametoindex(dev)))
"""
SEEN = ICMP6_SEEN.replace(  # (each message's type and the address it names)
    "seen.add(data[0])", "seen.add(f'{data[0]}/{socket.inet_ntop(socket.AF_INET6, data[8:24])}')"
)


def test_a_guests_advertisement_names_only_its_own_addresses(lab: BridgeLab):  # noqa: F811
    a, ra = lab.bridged("a")
    b, rb = lab.bridged("b")
    la = lab.link_local(a)
    own, theirs = ra["ipv6"]["address"], rb["ipv6"]["address"]
    slaac = str(IPv6Network(ra["ipv6"]["block"]).network_address + 0x0400ACFFFE100002)
    # a holds fe80::1 too, as a forger would (the sends from it below must leave)
    sh("ip", "-n", a, "-6", "addr", "add", "fe80::1/64", "dev", "eth0", "nodad")
    # (each watch ends at the first echo request from its source: sent last, see below)
    watches = [lab.watch(b, SEEN, source, "10", "128") for source in (la, "fe80::1")]
    before = lab.drops()
    lab.run(a, NA_SEND, "eth0", "na", la, own, slaac, la, theirs, "fe80::1", str(IPv6Address(1)))
    lab.run(a, NA_SEND, "eth0", "echo", "fe80::1", own)  # an echo from the gateway's address
    # after them, the echoes that end the watches: from a's link-local address, and from the
    # host's own fe80::1 (so what a sent before has been judged when each watch ends)
    lab.run(a, NA_SEND, "eth0", "echo", la, "::")
    lab.host.run(sys.executable, "-c", NA_SEND, "br0", "echo", "fe80::1", "::")
    from_a, from_gateway = (set(w.communicate(timeout=20)[0].split()) for w in watches)
    # the controls: its own address, another of its /64 and its link-local address
    for target in (own, slaac, la):
        assert f"136/{target}" in from_a, (target, from_a)
    # the forgeries: b's address, the gateway's; nothing from fe80::1 but the host's own
    for target in (theirs, "fe80::1", "::1"):
        assert f"136/{target}" not in from_a, (target, from_a)
    assert f"128/{own}" not in from_gateway, from_gateway
    assert "128/::" in from_a and "128/::" in from_gateway, (from_a, from_gateway)  # the ends
    assert lab.drops() > before
