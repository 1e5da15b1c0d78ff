"""The router advertisement fireroute sends on a v6 tap (docs/ipv6-plan.md 1.6; RFC 4861
4.2 and 4.6, RFC 8106 5.1), as the ICMPv6 message's bytes. The checksum field is left zero: a
raw ICMPv6 socket has the kernel fill it in (it knows the pseudo-header's addresses).

Layout, every field in network order::

    header, 16 bytes:  134, code 0, checksum 0, cur hop limit 64, flags 0 (M=O=0),
                       router lifetime 1800, reachable time 0, retrans timer 0
    prefix info (3), 32 bytes: length 4, prefix length, flags L|A (0xc0), valid 86400,
                       preferred 14400, reserved 0, the prefix (16 bytes)
    MTU (5), 8 bytes:  length 1, reserved 0, the MTU (4 bytes)
    source link-layer address (1), 8 bytes: length 1, the router's MAC (6 bytes)
    RDNSS (25), 8 + 16n bytes, only with DNS servers: length 1 + 2n, reserved 0,
                       lifetime 1800, the servers

A VM's advertisement without DNS servers is 64 bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from ipaddress import IPv6Address, IPv6Network

from fireroute.errors import UsageError

ROUTER_ADVERT, ROUTER_SOLICIT = 134, 133
HOP_LIMIT = 64  # the guest's cur hop limit
ROUTER_LIFETIME = 1800  # seconds; also the RDNSS lifetime (RFC 8106: >= 3 x the 300 s interval)
VALID, PREFERRED = 86400, 14400  # the prefix's lifetimes, seconds
ON_LINK, AUTONOMOUS = 0x80, 0x40  # prefix information flags L and A
OPT_SOURCE_LLADDR, OPT_PREFIX, OPT_MTU, OPT_RDNSS = 1, 3, 5, 25
SLAAC_PREFIX = 64  # the only prefix length an RA offers (RFC 4862 with 64-bit interface ids)
MAX_SERVERS = 8  # RDNSS servers per RA (the option could hold 127; a guest keeps a few)


def advertisement(
    prefix: IPv6Network,
    mac: str,
    mtu: int = 1500,
    dns: Sequence[IPv6Address] = (),
    offer: bool = True,
) -> bytes:
    """The RA offering ``prefix`` (on-link, for SLAAC), the link's ``mtu`` and the router's
    ``mac`` (``aa:bb:cc:dd:ee:ff``), plus RDNSS when ``dns`` names servers. A block that is
    not a /64 (``--prefix6``) is offered no prefix (SLAAC takes a /64 only; such a guest has
    its ``::2`` by the guest script): the RA gives the route alone; so does ``offer=False`` (a
    ``--proxy-ndp`` VM: the uplink's proxy entry answers for its ``::2`` only, so an address
    SLAAC chose would be unreachable from upstream)."""
    header = struct.pack("!BBHBBHII", ROUTER_ADVERT, 0, 0, HOP_LIMIT, 0, ROUTER_LIFETIME, 0, 0)
    info = struct.pack(
        "!BBBBIII16s",
        OPT_PREFIX,
        4,
        prefix.prefixlen,
        ON_LINK | AUTONOMOUS,
        VALID,
        PREFERRED,
        0,
        prefix.network_address.packed,
    )
    mtu_opt = struct.pack("!BBHI", OPT_MTU, 1, 0, mtu)
    lladdr = struct.pack("!BB6s", OPT_SOURCE_LLADDR, 1, bytes.fromhex(mac.replace(":", "")))
    out = header + (info if offer and prefix.prefixlen == SLAAC_PREFIX else b"") + mtu_opt + lladdr
    if dns:
        out += struct.pack("!BBHI", OPT_RDNSS, 1 + 2 * len(dns), 0, ROUTER_LIFETIME)
        out += b"".join(a.packed for a in dns)
    return out


def is_solicitation(message: bytes) -> bool:
    """An ICMPv6 router solicitation (RFC 4861 6.1.1: type 133, code 0, at least 8 bytes)."""
    return len(message) >= 8 and message[0] == ROUTER_SOLICIT and message[1] == 0


NOT_SERVER = (
    (IPv6Network("::/8"), "reserved (loopback, unspecified, IPv4-mapped)"),
    (IPv6Network("ff00::/8"), "multicast"),
)


def servers(values: Iterable[object], what: str = "--dns6") -> list[IPv6Address]:
    """The RDNSS servers ``values`` name (IPv6 addresses, in order, each once): UsageError
    naming the first that is not one a guest can send queries to."""
    out: list[IPv6Address] = []
    for value in values:
        try:
            addr = IPv6Address(value) if isinstance(value, str) else None
        except ValueError:
            addr = None
        if addr is None or addr.scope_id is not None:
            raise UsageError(f'{what} "{value}" is not an IPv6 address')
        for net, why in NOT_SERVER:
            if addr in net:
                raise UsageError(f"{what} {addr} is {why}: a guest cannot query it")
        if addr not in out:
            out.append(addr)
    if len(out) > MAX_SERVERS:
        raise UsageError(f"{what}: at most {MAX_SERVERS} DNS servers")
    return out
