"""What the host holds at one address, read by exact rtnetlink lookups (for the check of an
address a request names, fireroute/named.py): the FIB entry that would carry it and the
default route (kernel/netlink.py), the neighbour entry for it on a few links (RTM_GETNEIGH of
one address on one link: the kernel answers that entry alone), and those links' aliases
(RTM_GETLINK of one link). A handful of requests on one socket, whatever the number of VMs:
no table is dumped.
"""

from __future__ import annotations

import _socket
from ipaddress import IPv4Address

from fireroute.kernel import netlink
from fireroute.kernel.run import Runner, run

RTM_GETLINK, RTM_GETNEIGH = 18, 30
NLMSG_ERROR = 2
IFLA_IFALIAS = 20
NDA_DST, NDA_LLADDR = 1, 2
NUD_INCOMPLETE, NUD_FAILED = 0x01, 0x20
"""neighbour states in which nobody answered at the address: not a machine that is there"""


class Facts:
    """The host at one address: ``route`` (the FIB entry carrying it, ``ip -j`` shaped, or
    None), ``router`` (the default route's gateway, or None), ``aliases`` (link -> its alias,
    "" for none, for the links asked and the route's) and ``neighbour`` ((link, MAC) of a
    live neighbour entry on a link that is not fireroute's, or None)."""

    __slots__ = ("route", "router", "router_dev", "aliases", "neighbour")

    def __init__(self) -> None:
        self.route: dict[str, str] | None = None
        self.router: str | None = None
        self.router_dev: str | None = None
        self.aliases: dict[str, str] = {}
        self.neighbour: tuple[str, str] | None = None


def _ask(channel: netlink.Channel, kind: int, body: bytes) -> memoryview | None:
    """One GET request (not a dump); the answer's payload, or None when the kernel has no
    such object (or refused the request)."""
    got, payload = channel.ask(kind, body)
    return None if got == NLMSG_ERROR else payload


def _attrs(msg: memoryview, at: int) -> dict[int, memoryview]:
    out: dict[int, memoryview] = {}
    while at + 4 <= len(msg):
        length, kind = (
            int.from_bytes(msg[at : at + 2], "little"),
            int.from_bytes(msg[at + 2 : at + 4], "little"),
        )
        if length < 4:
            break
        out[kind & 0x3FFF] = msg[at + 4 : at + length]
        at += (length + 3) & ~3
    return out


def _alias(channel: netlink.Channel, index: int) -> str:
    body = bytes(4) + index.to_bytes(4, "little", signed=True) + bytes(8)
    msg = _ask(channel, RTM_GETLINK, body)
    if msg is None:
        return ""
    return bytes(_attrs(msg, 16).get(IFLA_IFALIAS, b"")).rstrip(b"\0").decode("utf-8", "replace")


def _neighbour(channel: netlink.Channel, index: int, addr: IPv4Address) -> str | None:
    """The MAC of the live neighbour entry for ``addr`` on link ``index``, or None."""
    body = bytes((netlink.AF_INET, 0, 0, 0)) + index.to_bytes(4, "little", signed=True)
    body += bytes(4)  # state, flags, type: zero in a request
    body += (8).to_bytes(2, "little") + NDA_DST.to_bytes(2, "little") + addr.packed
    msg = _ask(channel, RTM_GETNEIGH, body)
    if msg is None:
        return None
    state = int.from_bytes(msg[8:10], "little")
    if state & (NUD_INCOMPLETE | NUD_FAILED):
        return None
    mac = bytes(_attrs(msg, 12).get(NDA_LLADDR, b""))
    return ":".join(f"{b:02X}" for b in mac) or "no MAC"


def _index(name: str) -> int | None:
    try:
        return _socket.if_nametoindex(name)
    except OSError:
        return None


def read(addr: IPv4Address, links: list[str], ours: str, runner: Runner = run) -> Facts:
    """What the host holds at ``addr``; neighbours are looked up on ``links``, on the link
    the address is routed to and on the default route's, unless the link's alias starts with
    ``ours`` (fireroute's links: their neighbours are guests, leases). In-process; with
    ``ip -batch`` where netlink cannot be used or a scripted runner stands in for the host."""
    if runner is run:
        try:
            return _read(addr, links, ours)
        except OSError:
            pass
    return _read_ip(addr, links, ours, runner)


def _default(facts: Facts, routes: object) -> None:
    for r in routes if isinstance(routes, list) else []:
        if isinstance(r, dict) and r.get("dst") == "default":
            facts.router, facts.router_dev = r.get("gateway"), r.get("dev")


def _read_ip(addr: IPv4Address, links: list[str], ours: str, runner: Runner) -> Facts:
    from fireroute.kernel.observe import UNROUTED, ip_batch_json

    facts = Facts()
    default, entry = ip_batch_json(
        [f"route get fibmatch {UNROUTED}", f"route get fibmatch {addr}"], runner
    )
    _default(facts, default)
    facts.route = entry[0] if isinstance(entry, list) and entry else None  # type: ignore[assignment]
    devs = list(
        dict.fromkeys(d for d in [*links, (facts.route or {}).get("dev"), facts.router_dev] if d)
    )
    lines = [x for d in devs for x in (f"link show dev {d}", f"neigh show to {addr} dev {d}")]
    docs = ip_batch_json(lines, runner) if lines else []
    for i, dev in enumerate(devs):
        link, neigh = docs[2 * i], docs[2 * i + 1]
        if not isinstance(link, list) or not link:
            continue
        facts.aliases[dev] = str(link[0].get("ifalias", ""))
        if facts.neighbour is None and not facts.aliases[dev].startswith(ours):
            for n in neigh if isinstance(neigh, list) else []:
                if not set(n.get("state", [])) & {"INCOMPLETE", "FAILED"}:
                    facts.neighbour = (dev, str(n.get("lladdr", "no MAC")).upper())
    return facts


def _read(addr: IPv4Address, links: list[str], ours: str) -> Facts:
    from fireroute.kernel.observe import UNROUTED

    facts = Facts()
    default, entry = netlink.fib_match([int(UNROUTED), int(addr)])
    facts.route = entry[0] if entry else None
    _default(facts, default)
    devs = [*links, (facts.route or {}).get("dev"), facts.router_dev]
    channel = netlink.Channel()
    try:
        for dev in dict.fromkeys(d for d in devs if d):
            index = _index(dev)
            if index is None:
                continue
            facts.aliases[dev] = _alias(channel, index)
            if facts.neighbour is None and not facts.aliases[dev].startswith(ours):
                mac = _neighbour(channel, index, addr)
                if mac is not None:
                    facts.neighbour = (dev, mac)
    finally:
        channel.close()
    return facts
