"""The router advertisement responder (docs/ipv6-plan.md 1.6): one raw ICMPv6 socket in the
namespace it runs in, answering a router solicitation that arrives on the tap of a VM with
IPv6 with that VM's advertisement (render/ra.py), and advertising unsolicited on every v6 tap
with carrier at start and every ``interval`` seconds. Each RA leaves from ``fe80::1`` (the
host side of every v6 tap) with hop limit 255.

The state file is only read: the view of the v6 VMs is read again at every period, and a
solicitation on a tap the view does not know looks that tap up. A tap seen without carrier
(its VMM not attached yet), or whose send failed (right after carrier there is no multicast
route yet: "Network is unreachable"), is looked at again every ``retry`` seconds and advertised
as soon as it has carrier. Run by ``fireroute ra``; never imported on the per-VM path."""

from __future__ import annotations

import errno
import fcntl
import select
import socket
import struct
import time
from collections.abc import Callable
from ipaddress import IPv6Address

from fireroute.addressing import GATEWAY6
from fireroute.errors import FirerouteError, PermissionDenied
from fireroute.model import Vm
from fireroute.render import ra
from fireroute.state.store import Store

SIOCGIFFLAGS, SIOCGIFMTU, SIOCGIFHWADDR = 0x8913, 0x8921, 0x8927
IFF_RUNNING = 0x40  # the link is operationally up: a tap's VMM holds it open
ICMP6_FILTER = 1  # (linux/icmpv6.h) a bit set blocks that type
ALL_NODES = "ff02::1"
UNSPECIFIED = "::"


def solicitations_only() -> bytes:
    """The ICMP6_FILTER value passing router solicitations only."""
    words = [0xFFFFFFFF] * 8
    words[ra.ROUTER_SOLICIT >> 5] &= ~(1 << (ra.ROUTER_SOLICIT & 31)) & 0xFFFFFFFF
    return struct.pack("8I", *words)


def open_socket() -> socket.socket:
    """The responder's raw ICMPv6 socket: solicitations only, reporting each one's interface
    and hop limit; what it sends leaves with hop limit 255 (RFC 4861 6.1.2)."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    except PermissionError:
        raise PermissionDenied(
            "cannot open a raw ICMPv6 socket for router advertisements: Operation not "
            "permitted (need CAP_NET_RAW)"
        ) from None
    s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, solicitations_only())
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    return s


def _ifreq(s: socket.socket, request: int, dev: str) -> bytes:
    return fcntl.ioctl(s.fileno(), request, struct.pack("40s", dev.encode()))


class Link:
    """What an advertisement on tap ``dev`` needs of the kernel: its carrier, MAC and MTU (by
    ioctl on the responder's socket, so in its namespace)."""

    def __init__(self, s: socket.socket, dev: str) -> None:
        flags = struct.unpack_from("H", _ifreq(s, SIOCGIFFLAGS, dev), 16)[0]
        self.carrier = bool(flags & IFF_RUNNING)
        self.mac = _ifreq(s, SIOCGIFHWADDR, dev)[18:24].hex(":")
        self.mtu = struct.unpack_from("i", _ifreq(s, SIOCGIFMTU, dev), 16)[0]


class Responder:
    def __init__(
        self,
        state: str,
        *,
        interval: float = 300.0,
        retry: float = 5.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state
        self.store = Store(state, create=False)
        self.sock = open_socket()
        self.interval, self.retry, self.log = interval, retry, log
        self.vms: dict[str, Vm] = {}  # tap -> its v6 VM
        self.waiting: set[str] = set()  # taps to advertise on once they have carrier

    def close(self) -> None:
        self.sock.close()
        if self.store.db is not None:
            self.store.db.close()

    def opened(self) -> Store:
        """The state file, read-only; opened again while there is none (no VM up yet)."""
        if self.store.db is None:
            self.store = Store(self.state, create=False)
        return self.store

    def refresh(self) -> None:
        """Read the v6 VMs again; every tap is advertised on at the next look."""
        self.vms = {vm.tap: vm for vm in self.opened().all() if advertised(vm)}
        self.waiting = set(self.vms)

    def lookup(self, tap: str) -> Vm | None:
        vm = self.vms.get(tap)
        if vm is None and (name := self.opened().tap_owner(tap)) is not None:
            found = self.store.get(name)
            if found is not None and advertised(found):
                vm = self.vms[tap] = found
        return vm

    def advertise(self, vm: Vm, dst: str = ALL_NODES, why: str = "periodic") -> bool:
        """Send ``vm``'s RA on its tap to ``dst``: False when the tap has no carrier or the
        send failed (then it is tried again later)."""
        assert vm.net6 is not None
        try:
            link = Link(self.sock, vm.tap)
            if not link.carrier:
                return False
            index = socket.if_nametoindex(vm.tap)
            message = ra.advertisement(vm.net6, link.mac, link.mtu, dns6(vm))
            source = struct.pack("16sI", GATEWAY6.packed, index)
            cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, source)]
            self.sock.sendmsg([message], cmsg, 0, (dst, 0, 0, index))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):  # the tap is gone: forget it
                self.vms.pop(vm.tap, None)
            elif self.log:
                self.log(f"ra: cannot advertise on {vm.tap} (vm {vm.name}): {exc.strerror}")
            return False
        if self.log:
            self.log(f"ra: {vm.tap} (vm {vm.name}) {vm.net6} to {dst} ({why})")
        return True

    def look(self) -> None:
        """Advertise on every waiting tap that has carrier now."""
        for tap in sorted(self.waiting):
            vm = self.vms.get(tap)
            if vm is None or self.advertise(vm):
                self.waiting.discard(tap)

    def answer(self) -> None:
        """Read one solicitation and answer it (anything else is ignored)."""
        data, ancillary, _, peer = self.sock.recvmsg(2048, 256)
        index, hops = 0, 0
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                index = struct.unpack_from("I", value, 16)[0]
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                hops = struct.unpack("i", value)[0]
        if not ra.is_solicitation(data) or hops != 255 or not index:
            return  # RFC 4861 6.1.1: not one from the link itself
        try:
            vm = self.lookup(socket.if_indextoname(index))
        except OSError:
            return
        if vm is not None:
            solicitor = peer[0].partition("%")[0]
            self.advertise(vm, ALL_NODES if solicitor == UNSPECIFIED else solicitor, "solicited")

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Serve until ``stop()`` is true (looked at every second) or an interrupt."""
        period = 0.0
        look = 0.0
        while not stop():
            now = time.monotonic()
            if now >= period:
                self.refresh()
                period = now + self.interval
            if now >= look:
                self.look()
                look = now + self.retry
            wait = min(period, look, now + 1.0) - now
            ready, _, _ = select.select([self.sock], [], [], max(wait, 0.0))
            if ready:
                self.answer()


def advertised(vm: Vm) -> bool:
    """Is ``vm`` advertised to: a VM with IPv6 on a tap of its own (a bridge guest's tap is a
    port: its gateway is the bridge's, which advertises nothing yet; it is configured by the
    guest script)."""
    return vm.net6 is not None and vm.mode != "bridge"


def dns6(vm: Vm) -> list[IPv6Address]:
    """The VM's IPv6 DNS servers, for RDNSS (none today: ``--dns`` takes IPv4 only)."""
    return [IPv6Address(str(d)) for d in vm.options.dns if ":" in str(d)]


def serve(state: str, verbose: bool = False) -> None:
    """``fireroute ra``: the responder over ``state`` in the foreground."""
    import sys

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        responder = Responder(state, log=log if verbose else None)
    except OSError as exc:
        raise FirerouteError(f"cannot start the RA responder: {exc.strerror}") from None
    if verbose:
        sys.stderr.write(f"fireroute: ra: answering on the v6 taps of {state}\n")
        sys.stderr.flush()
    try:
        responder.run()
    finally:
        responder.close()
