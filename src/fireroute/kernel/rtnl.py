"""A small rtnetlink writer on one kept-open socket: the few ``ip`` writes fireroute's
per-VM plans make (address add, route add, link set, link del, link del group), in-process.

Each request carries NLM_F_ACK and waits for its answer; a refusal raises :class:`RtnlError`
(an OSError with the kernel's errno and, when the kernel gave one, its extended-ack text).
``str(err)`` is what ``ip`` prints for the same refusal ("RTNETLINK answers: File exists",
"Error: ipv4: Address already assigned."): a failure reads the same whichever executor ran
it; what it means is the errno's kind (kernel/kinds.py ``of_errno``), not the text.
"""

from __future__ import annotations

import _socket
import os

from fireroute.kernel.netlink import Channel

AF_NETLINK, NETLINK_ROUTE, SOL_NETLINK = 16, 0, 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # on an error message: request cut, TLVs follow
NLMSGERR_ATTR_MSG = 1
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_DELROUTE = 16, 17, 20, 24, 25
IFLA_MASTER, IFLA_IFALIAS, IFLA_AF_SPEC, IFLA_GROUP = 10, 20, 26, 27
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x2
RTA_DST, RTA_OIF = 1, 4
RT_TABLE_MAIN, RT_TABLE_LOCAL, RTPROT_BOOT, RTN_UNICAST = 254, 255, 3, 1
IFF_UP = 0x1
AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST, RT_SCOPE_NOWHERE = 0, 253, 254, 255


class RtnlError(OSError):
    """The kernel refused a request: ``errno`` and the extended-ack ``message`` (or "")."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(errno, os.strerror(errno))
        self.message = message

    def __str__(self) -> str:
        if self.message:  # iproute2 prints the kernel's text, ending it with a full stop
            return f"Error: {self.message}" + ("" if self.message.endswith(".") else ".")
        return f"RTNETLINK answers: {self.strerror}"


class NoDevice(OSError):
    """A device name that does not resolve: what ``ip`` reports before sending anything."""

    def __init__(self, name: str) -> None:
        super().__init__(19, os.strerror(19))  # ENODEV
        self.name = name

    def __str__(self) -> str:
        return f'Cannot find device "{self.name}"'


def attr(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    head = (4 + len(value)).to_bytes(2, "little") + kind.to_bytes(2, "little")
    return head + value + bytes(-len(value) % 4)


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def ifinfomsg(index: int, flags: int = 0, change: int = 0) -> bytes:
    return bytes((AF_UNSPEC, 0, 0, 0)) + u32(index) + u32(flags) + u32(change)


def ifaddrmsg(
    index: int, prefixlen: int, scope: int, family: int = AF_INET, flags: int = 0
) -> bytes:
    return bytes((family, prefixlen, flags, scope)) + u32(index)


def rtmsg(family: int, dst_len: int, scope: int) -> bytes:
    """A main-table unicast route's header, ``proto boot`` as ``ip route add`` sends it."""
    return bytes((family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST)) + u32(0)


def packed(address: str) -> tuple[int, bytes]:
    """(family, the address in network order): IPv6 when it has a colon; OSError if it is not
    an address of that family."""
    if ":" in address:
        return AF_INET6, _socket.inet_pton(AF_INET6, address)
    return AF_INET, _socket.inet_aton(address)


def ifindex(name: str) -> int:
    """The link's index; NoDevice if there is no such link (in this namespace)."""
    try:
        return _socket.if_nametoindex(name)
    except OSError:
        raise NoDevice(name) from None


def parse_ack(msg: bytes | memoryview) -> RtnlError | None:
    """An NLMSG_ERROR message (whole, header included): None for an ack, else the error."""
    flags = int.from_bytes(msg[6:8], "little")
    error = -int.from_bytes(msg[16:20], "little", signed=True)
    if error == 0:
        return None
    text = ""
    if flags & NLM_F_ACK_TLVS:  # after the echoed request: its header only when capped
        at = 20 + (16 if flags & NLM_F_CAPPED else int.from_bytes(msg[20:24], "little"))
        while at + 4 <= len(msg):
            length, kind = int.from_bytes(msg[at : at + 2], "little"), msg[at + 2]
            if length < 4:
                break
            if kind == NLMSGERR_ATTR_MSG:
                text = bytes(msg[at + 4 : at + length]).rstrip(b"\0").decode("utf-8", "replace")
            at += (length + 3) & ~3
    return RtnlError(error, text)


class Rtnl(Channel):
    """One NETLINK_ROUTE socket, opened on first use, in the namespace it was opened in."""

    PROTOCOL = NETLINK_ROUTE

    def request(self, kind: int, flags: int, body: bytes) -> None:
        """Send one request with NLM_F_ACK and wait for its answer; RtnlError if refused."""
        sock = self._socket()
        self.seq += 1
        seq = self.seq
        head = u32(16 + len(body)) + kind.to_bytes(2, "little")
        flags |= NLM_F_REQUEST | NLM_F_ACK
        sock.send(head + flags.to_bytes(2, "little") + u32(seq) + u32(0) + body)
        while True:
            data = memoryview(sock.recv(1 << 16))
            at = 0
            while at + 16 <= len(data):
                length = int.from_bytes(data[at : at + 4], "little")
                if length < 16:
                    break
                msg = data[at : at + length]
                at += (length + 3) & ~3
                if int.from_bytes(msg[8:12], "little") != seq:
                    continue  # an answer to an earlier request that timed out
                if int.from_bytes(msg[4:6], "little") == NLMSG_ERROR:
                    error = parse_ack(msg)
                    if error is not None:
                        raise error
                    return

    def add_address(self, index: int, address: str, prefixlen: int, nodad: bool = False) -> None:
        """``ip address add A/P dev X [nodad]``: IFA_LOCAL and IFA_ADDRESS, created exclusively,
        scope host for 127/8 and global otherwise (iproute2's default; the kernel scopes an
        IPv6 one itself); ``nodad`` (IPv6): usable at once, in the header's flags as iproute2
        sends it."""
        family, raw = packed(address)
        scope = RT_SCOPE_HOST if family == AF_INET and raw[0] == 127 else RT_SCOPE_UNIVERSE
        flags = IFA_F_NODAD if nodad else 0
        body = ifaddrmsg(index, prefixlen, scope, family, flags) + attr(IFA_LOCAL, raw)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body + attr(IFA_ADDRESS, raw))

    def add_route(self, index: int, dst: str, dst_len: int) -> None:
        """``ip route add D/L dev X`` (no gateway): created exclusively in the main table,
        scope link for IPv4 and global for IPv6 (as iproute2 sends them)."""
        family, raw = packed(dst)
        scope = RT_SCOPE_UNIVERSE if family == AF_INET6 else RT_SCOPE_LINK
        body = rtmsg(family, dst_len, scope) + attr(RTA_DST, raw) + attr(RTA_OIF, u32(index))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)

    def del_route(self, index: int, dst: str, dst_len: int, table: int = RT_TABLE_MAIN) -> None:
        """``ip route del D/L dev X [table T]``: the route to D/L through the device in the
        main table (or ``table``)."""
        family, raw = packed(dst)
        # as iproute2 sends a delete: any protocol, scope and type
        head = bytes((family, dst_len, 0, 0, table, 0, RT_SCOPE_NOWHERE, 0)) + u32(0)
        self.request(RTM_DELROUTE, 0, head + attr(RTA_DST, raw) + attr(RTA_OIF, u32(index)))

    def set_link(
        self,
        index: int,
        up: bool = False,
        group: int | None = None,
        alias: str | None = None,
        master: int | None = None,
        no_addrgen: bool = False,
    ) -> None:
        """``ip link set dev X [master M] [group G] [alias A] [addrgenmode none] [up]``: one
        RTM_NEWLINK, after one that sets the address generation alone (sent together, a link
        with carrier brought up within about a second of being made got its link-local
        address as it came up, before the mode applied; ``ip``, which asks for the link
        first, did not show it)."""
        if no_addrgen:  # (nested: the IPv6 family's part of the link)
            mode = attr(IFLA_INET6_ADDR_GEN_MODE, bytes((IN6_ADDR_GEN_MODE_NONE,)))
            spec = attr(IFLA_AF_SPEC, attr(AF_INET6, mode))
            self.request(RTM_NEWLINK, 0, ifinfomsg(index) + spec)
        body = ifinfomsg(index, IFF_UP if up else 0, IFF_UP if up else 0)
        if master is not None:
            body += attr(IFLA_MASTER, u32(master))
        if group is not None:
            body += attr(IFLA_GROUP, u32(group))
        if alias is not None:  # without a trailing NUL, as iproute2 sends it
            body += attr(IFLA_IFALIAS, alias.encode())
        self.request(RTM_NEWLINK, 0, body)

    def del_link(self, index: int) -> None:
        """``ip link del dev X``."""
        self.request(RTM_DELLINK, 0, ifinfomsg(index))

    def del_group(self, group: int) -> None:
        """``ip link del group G``: every link of the group (ENODEV when there is none)."""
        self.request(RTM_DELLINK, 0, ifinfomsg(0) + attr(IFLA_GROUP, u32(group)))
