"""Route lookups over rtnetlink, in-process: what ``ip -j route get fibmatch ADDR`` answers,
without starting ``ip`` (~1.5 ms a process, on every ``up``).

Only reads. One request per address, sent in chunks on one socket; each answer is the FIB
entry that would carry the address (RTM_F_FIB_MATCH), local table included, or None where
there is no route. Answers are shaped like ``ip -j`` output (dst, dev, gateway, type, table)
so that callers do not care which of the two produced them; tests/kernel/test_netlink.py
checks that they agree with ``ip`` on real routes.
"""

from __future__ import annotations

import _socket

AF_NETLINK, NETLINK_ROUTE = 16, 0
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLM_F_REQUEST = 1
RTM_F_LOOKUP_TABLE, RTM_F_FIB_MATCH = 0x1000, 0x2000  # answer with the table looked up, the entry
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
AF_INET = 2
TYPES = {
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
}
TABLES = {253: "default", 254: "main", 255: "local"}
CHUNK = 128  # requests in flight: their answers must fit the socket's receive buffer


def _u16(b: bytes | memoryview, at: int) -> int:
    return int.from_bytes(b[at : at + 2], "little")


def _u32(b: bytes | memoryview, at: int) -> int:
    return int.from_bytes(b[at : at + 4], "little")


def _request(seq: int, addr: int) -> bytes:
    rtmsg = bytes((AF_INET, 32, 0, 0, 0, 0, 0, 0)) + (
        RTM_F_FIB_MATCH | RTM_F_LOOKUP_TABLE
    ).to_bytes(4, "little")
    rta = (8).to_bytes(2, "little") + RTA_DST.to_bytes(2, "little") + addr.to_bytes(4, "big")
    body = rtmsg + rta
    head = (16 + len(body)).to_bytes(4, "little") + RTM_GETROUTE.to_bytes(2, "little")
    return head + NLM_F_REQUEST.to_bytes(2, "little") + seq.to_bytes(4, "little") + bytes(4) + body


def _route(msg: memoryview) -> dict[str, str]:
    """An RTM_NEWROUTE message (after its 16-byte header) as ``ip -j`` would print it."""
    dst_len, table, rtype = msg[1], msg[4], msg[7]
    route: dict[str, str] = {"type": TYPES.get(rtype, str(rtype))}
    dst, at = "", 12
    while at + 4 <= len(msg):
        length, kind = _u16(msg, at), _u16(msg, at + 2)
        if length < 4:
            break
        value = msg[at + 4 : at + length]
        if kind == RTA_DST and len(value) == 4:
            dst = ".".join(str(x) for x in value)
        elif kind == RTA_OIF and len(value) == 4:
            try:
                route["dev"] = _socket.if_indextoname(_u32(value, 0))
            except OSError:
                route["dev"] = f"if{_u32(value, 0)}"
        elif kind == RTA_GATEWAY and len(value) == 4:
            route["gateway"] = ".".join(str(x) for x in value)
        elif kind == RTA_TABLE and len(value) == 4:
            table = _u32(value, 0)
        at += (length + 3) & ~3
    route["dst"] = "default" if dst_len == 0 else dst if dst_len == 32 else f"{dst}/{dst_len}"
    route["table"] = TABLES.get(table, str(table))
    return route


def fib_match(addrs: list[int]) -> list[list[dict[str, str]] | None]:
    """For each IPv4 address (as int), ``[route]`` of the FIB entry that would carry it, or
    None when nothing does. OSError if netlink cannot be used."""
    out: list[list[dict[str, str]] | None] = [None] * len(addrs)
    sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.settimeout(5.0)  # an unanswered request ends in OSError, never a hang
        sock.bind((0, 0))
        for first in range(0, len(addrs), CHUNK):
            seqs = range(first + 1, min(first + CHUNK, len(addrs)) + 1)
            sock.send(b"".join(_request(seq, addrs[seq - 1]) for seq in seqs))
            waiting = set(seqs)
            while waiting:
                data = memoryview(sock.recv(1 << 16))
                at = 0
                while at + 16 <= len(data):
                    length, kind, seq = _u32(data, at), _u16(data, at + 4), _u32(data, at + 8)
                    if length < 16:
                        break
                    if seq in waiting:
                        waiting.discard(seq)
                        if kind == RTM_NEWROUTE:
                            out[seq - 1] = [_route(data[at + 16 : at + length])]
                    at += (length + 3) & ~3
    finally:
        sock.close()
    return out


def link_exists(name: str) -> bool:
    try:
        _socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def messages(data: memoryview) -> list[tuple[int, int, memoryview]]:
    """The netlink messages of one datagram, as (type, sequence number, whole message)."""
    out, at = [], 0
    while at + 16 <= len(data):
        length = _u32(data, at)
        if length < 16:
            break
        out.append((_u16(data, at + 4), _u32(data, at + 8), data[at : at + length]))
        at += (length + 3) & ~3
    return out


SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11


class Channel:
    """One netlink socket of ``PROTOCOL``, opened on first use (in the namespace it was opened
    in), with short acknowledgements that carry the kernel's error text; the writers in
    kernel/rtnl.py and kernel/nftnl.py are channels."""

    PROTOCOL = NETLINK_ROUTE

    def __init__(self) -> None:
        self.sock: _socket.socket | None = None
        self.seq = 0

    def _socket(self) -> _socket.socket:
        if self.sock is None:
            sock = _socket.socket(
                AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, self.PROTOCOL
            )
            try:
                sock.settimeout(5.0)  # an unanswered request ends in OSError, never a hang
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
                sock.bind((0, 0))
            except BaseException:
                sock.close()
                raise
            self.sock = sock
        return self.sock

    def ask(self, kind: int, body: bytes) -> tuple[int, memoryview]:
        """One request that is answered by one message (a GET of one object): the answer's
        type and payload (after its header); NLMSG_ERROR's when the kernel refused it."""
        sock = self._socket()
        self.seq += 1
        head = (16 + len(body)).to_bytes(4, "little") + kind.to_bytes(2, "little")
        flags = NLM_F_REQUEST.to_bytes(2, "little")
        sock.send(head + flags + self.seq.to_bytes(4, "little") + bytes(4) + body)
        while True:
            data = memoryview(sock.recv(1 << 16))
            for got, seq, msg in messages(data):
                if seq == self.seq:
                    return got, msg[16:]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
