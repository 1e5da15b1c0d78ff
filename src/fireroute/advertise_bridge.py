"""Router advertisements for bridge guests (docs/ipv6.md, bridge), at layer 2: the guests of
one bridge share it, each with a /64 of its own, so no multicast RA can carry one guest's
prefix alone. Each is sent its own RA as one Ethernet frame written onto its tap (a port of
the bridge: the frame goes to that guest only, around the bridge), addressed to the guest's
MAC, from ``fe80::1`` and the bridge's MAC (the router the guest then uses).

A guest's router solicitation reaches the host on the bridge device; the raw ICMPv6 socket
would say only that. One packet socket per bridge with v6 guests (not per guest) is handed
the solicitations alone (a classic BPF filter in the kernel drops every other frame before
it is queued) with their Ethernet source: the bridge table holds every port to its guest's
MAC, so that MAC names the guest that asked. Used by the responder (advertise.py)."""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
from ipaddress import IPv6Address

ETH_P_IPV6 = 0x86DD
SO_ATTACH_FILTER = 26
ICMPV6 = 58
HOP_LIMIT = 255  # RFC 4861 6.1.2: neighbour discovery's hop limit
ETH, IP6 = 14, 40  # header sizes
ROUTER_SOLICIT = 133

# ldh [12]; jeq ETH_P_IPV6; ldb [20] (next header); jeq ICMPv6; ldb [54] (ICMPv6 type);
# jeq ROUTER_SOLICIT; ret whole frame; ret 0 (dropped in the kernel)
SOLICITATIONS = (
    (0x28, 0, 0, 12),
    (0x15, 0, 5, ETH_P_IPV6),
    (0x30, 0, 0, ETH + 6),
    (0x15, 0, 3, ICMPV6),
    (0x30, 0, 0, ETH + IP6),
    (0x15, 0, 1, ROUTER_SOLICIT),
    (0x06, 0, 0, 0xFFFF),
    (0x06, 0, 0, 0),
)


def checksum(src: IPv6Address, dst: IPv6Address, message: bytes) -> int:
    """The ICMPv6 checksum of ``message`` (its checksum field zero) from ``src`` to ``dst``
    (RFC 4443 2.3: over the pseudo-header, RFC 8200 8.1)."""
    data = src.packed + dst.packed + struct.pack("!II", len(message), ICMPV6) + message
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(dst_mac: str, src_mac: str, src: IPv6Address, dst: IPv6Address, message: bytes) -> bytes:
    """The Ethernet frame carrying the ICMPv6 ``message`` (checksum field zero: filled in
    here) from ``src`` at ``src_mac`` to ``dst`` at ``dst_mac``, hop limit 255."""
    body = bytearray(message)
    struct.pack_into("!H", body, 2, checksum(src, dst, message))
    ip = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, HOP_LIMIT) + src.packed + dst.packed
    eth = _mac(dst_mac) + _mac(src_mac) + struct.pack("!H", ETH_P_IPV6)
    return eth + ip + bytes(body)


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Solicitation:
    """A router solicitation as a frame: who sent it (MAC, IPv6 source), or None when the
    frame is not one from the link itself (RFC 4861 6.1.1: hop limit 255, code 0)."""

    def __init__(self, mac: str, source: IPv6Address) -> None:
        self.mac, self.source = mac, source

    @classmethod
    def parse(cls, data: bytes) -> Solicitation | None:
        if len(data) < ETH + IP6 + 8 or data[12:14] != b"\x86\xdd":
            return None
        ip, icmp = data[ETH : ETH + IP6], data[ETH + IP6 :]
        if ip[6] != ICMPV6 or ip[7] != HOP_LIMIT or icmp[0] != ROUTER_SOLICIT or icmp[1] != 0:
            return None
        return cls(data[6:12].hex(":"), IPv6Address(ip[8:24]))


def open_sender() -> socket.socket:
    """The packet socket RAs are written onto taps with (protocol 0: it receives nothing)."""
    return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)


def open_listener(bridge: str) -> socket.socket:
    """A packet socket handed the router solicitations arriving on ``bridge`` only."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    try:
        program = b"".join(struct.pack("HBBI", *op) for op in SOLICITATIONS)
        buf = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(SOLICITATIONS), ctypes.addressof(buf))
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        s.bind((bridge, ETH_P_IPV6))
        s.setblocking(False)
        while True:  # what was queued before the filter held
            s.recv(1)
    except BlockingIOError:
        return s
    except OSError:
        s.close()
        raise


class Bridges:
    """The responder's layer-2 sockets: one sender, made at the first bridge guest, and a
    listener per bridge with v6 guests (:meth:`sync`)."""

    def __init__(self) -> None:
        self.sender: socket.socket | None = None
        self.listeners: dict[str, socket.socket] = {}

    def send(self, tap: str, data: bytes) -> None:
        if self.sender is None:
            self.sender = open_sender()
        self.sender.sendto(data, (tap, ETH_P_IPV6))

    def sync(self, bridges: set[str]) -> list[str]:
        """Listen on exactly ``bridges``: the ones that could not be listened on (not there).
        With no bridge left, the sender is closed too (made again at the next bridge guest)."""
        for gone in set(self.listeners) - bridges:
            self.listeners.pop(gone).close()
        if not bridges and self.sender is not None:
            self.sender.close()
            self.sender = None
        failed = []
        for br in sorted(bridges - set(self.listeners)):
            try:
                self.listeners[br] = open_listener(br)
            except OSError:
                failed.append(br)
        return failed

    def close(self) -> None:
        for s in [*self.listeners.values(), *([self.sender] if self.sender else [])]:
            with contextlib.suppress(OSError):
                s.close()
        self.listeners.clear()
        self.sender = None
