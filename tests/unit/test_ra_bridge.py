"""The bridge guests' router advertisements without the kernel (advertise_bridge.py and the
responder's view of bridge guests); tests/kernel/test_ra_bridge.py sends them to guests."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address, IPv6Network

from fireroute import addressing
from fireroute import advertise_bridge as l2
from fireroute.advertise import View
from fireroute.model import Options, Vm
from fireroute.render import ra
from tests.unit.test_store6 import POOL4, POOL6_60, v6

GUEST, ROUTER = "06:00:ac:10:00:02", "02:00:00:00:00:01"
LL = IPv6Address("fe80::1")


def bridged(name: str, ordinal: int, mac: str, bridge: str = "br0") -> Vm:
    o = Options(mode="bridge", bridge=bridge, guest=f"192.168.6.{ordinal + 2}/24", ipv6=True)
    net = addressing.block(POOL4, 30, ordinal)
    net6 = addressing.block6(POOL6_60, ordinal)
    return Vm(name, net, f"t-{name}", mac, "eth0", o, net6=net6)


def test_an_ra_frame_is_addressed_to_the_guests_mac_and_its_checksum_holds():
    message = ra.advertisement(IPv6Network("fd00:1::/64"), ROUTER)
    dst = IPv6Address("ff02::1")
    data = l2.frame(GUEST, ROUTER, LL, dst, message)
    assert data[:6].hex(":") == GUEST and data[6:12].hex(":") == ROUTER
    assert data[12:14] == b"\x86\xdd" and data[20:22] == bytes([58, 255])
    assert struct.unpack("!H", data[18:20])[0] == len(message)
    assert data[22:38] == LL.packed and data[38:54] == dst.packed
    icmp = data[54:]
    assert icmp[:2] == message[:2] and icmp[4:] == message[4:]
    assert l2.checksum(LL, dst, icmp) == 0  # (the sum over a message with its checksum)
    assert l2.checksum(LL, dst, message) != 0


def test_only_a_solicitation_from_the_link_itself_is_parsed():
    rs = struct.pack("!BBHI", 133, 0, 0, 0)
    src = IPv6Address("fe80::4:aff:fe10:2")
    good = l2.frame("33:33:00:00:00:02", GUEST, src, IPv6Address("ff02::2"), rs)
    asked = l2.Solicitation.parse(good)
    assert asked is not None and (asked.mac, asked.source) == (GUEST, src)
    forwarded = bytearray(good)
    forwarded[21] = 254  # hop limit: not from the link
    advert = l2.frame(GUEST, ROUTER, LL, src, ra.advertisement(IPv6Network("fd00::/64"), ROUTER))
    for bad in (bytes(forwarded), advert, good[:60], b"\0" * 12 + b"\x08\x00" + good[14:]):
        assert l2.Solicitation.parse(bad) is None


def test_the_view_finds_a_bridge_guest_by_its_bridge_and_mac_only():
    view = View()
    a, b = bridged("a", 0, GUEST.upper()), bridged("b", 1, "06:00:ac:10:00:03")
    view.update([a, b, v6("n", 2)], everyone=True)
    assert view.waiting == {"t-a", "t-b", "t-n"}  # bridge guests are advertised to
    assert view.bridges() == {"br0"}
    assert view.port("br0", GUEST) is view.vms["t-a"]
    assert view.port("br0", "06:00:AC:10:00:03") is view.vms["t-b"]
    assert view.port("br1", GUEST) is None  # another bridge's port
    view.update([b])
    assert view.port("br0", GUEST) is None and view.bridges() == {"br0"}
    view.update([])
    assert view.bridges() == set()
