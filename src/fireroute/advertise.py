"""The router advertisement responder (docs/ipv6-plan.md 1.6): one raw ICMPv6 socket in the
namespace it runs in, answering a router solicitation that arrives on the tap of a VM with
IPv6 with that VM's advertisement (render/ra.py), and advertising unsolicited on every v6 tap
with carrier at start and every ``interval`` seconds. Each RA leaves from the VM's gateway
(``Vm.gateway6``, the host side of its tap) with hop limit 255. A bridge guest (its tap a port
of the bridge, whose ``fe80::1`` it is) is sent its own RA at layer 2 onto its tap, and its
solicitations are told apart by their Ethernet source (advertise_bridge.py).

The state file is only read: the view of the v6 VMs is read again at every period (every tap
advertised on), and within a second of another process writing the state file (SQLite's
``data_version``; the daemon's worker also says so at once, :meth:`Responder.changed`): a new
v6 VM's tap is advertised on, a removed VM's tap forgotten. A solicitation is answered with
what the state file says of its tap at that moment. A tap seen without carrier
(its VMM not attached yet), or whose send failed (right after carrier there is no multicast
route yet: "Network is unreachable"), is looked at again every ``retry`` seconds and advertised
as soon as it has carrier. Run by ``fireroute ra`` and, as a thread, by ``fireroute serve``
(serve/ra.py); never imported on the per-VM path."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv6Address

from fireroute import advertise_bridge as l2
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


class View:
    """The responder's bookkeeping, without a socket: the v6 VMs by tap and the taps to
    advertise on once they have carrier."""

    def __init__(self) -> None:
        self.vms: dict[str, Vm] = {}  # tap -> its v6 VM
        self.waiting: set[str] = set()  # taps to advertise on once they have carrier
        self.macs: dict[tuple[str, str], str] = {}  # (bridge, guest MAC) -> a bridge guest's tap

    def update(self, vms: Iterable[Vm], everyone: bool = False) -> None:
        """The v6 VMs as the state file has them now: a VM gone is dropped (and no longer
        waited for); a new one, or one whose tap now serves another VM or prefix, waits for
        its first advertisement (``everyone``: every tap does, the periodic one)."""
        now = {vm.tap: vm for vm in vms if advertised(vm)}
        fresh = {t for t, vm in now.items() if _same(self.vms.get(t)) != _same(vm)}
        self.waiting = set(now) if everyone else (self.waiting & set(now)) | fresh
        self.vms = now
        self.macs = {
            (str(vm.options.bridge), vm.mac.lower()): t for t, vm in now.items() if bridged(vm)
        }

    def bridges(self) -> set[str]:
        """The bridges with v6 guests."""
        return {br for br, _ in self.macs}

    def port(self, bridge: str, mac: str) -> Vm | None:
        """The v6 guest of MAC ``mac`` on ``bridge``."""
        tap = self.macs.get((bridge, mac.lower()))
        return None if tap is None else self.vms.get(tap)

    def learn(self, vm: Vm | None, tap: str) -> Vm | None:
        """What a lookup of ``tap`` in the state file found: kept if a v6 VM, else the tap is
        forgotten (its VM is gone, or has no IPv6 now)."""
        if vm is None or not advertised(vm) or vm.tap != tap:
            self.forget(tap)
            return None
        self.vms[tap] = vm
        return vm

    def forget(self, tap: str) -> None:
        self.vms.pop(tap, None)
        self.waiting.discard(tap)


def advertised(vm: Vm) -> bool:
    """Is ``vm`` advertised to: a VM with IPv6."""
    return vm.net6 is not None


def bridged(vm: Vm) -> bool:
    """Is ``vm`` a bridge guest (its tap a port; its gateway the bridge's ``fe80::1``)?"""
    return vm.mode == "bridge" and vm.options.bridge is not None


def _same(vm: Vm | None) -> tuple[str, str] | None:
    return None if vm is None else (vm.name, str(vm.net6))


class Responder:
    """The responder over the state file ``state``. Its state file is opened (read-only) by
    the thread that runs it (:meth:`run`), and closed there at the end; :meth:`changed` and
    :meth:`stop` may be called from any thread."""

    def __init__(
        self,
        state: str,
        *,
        interval: float = 300.0,
        retry: float = 5.0,
        dns: Sequence[IPv6Address] = (),
        log: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.state = state
        self.store: Store | None = None
        self.version: int | None = None  # the state file's data_version last read
        self.sock = sock or open_socket()
        self.wake, self.waker = socket.socketpair()
        for end in (self.wake, self.waker):
            end.setblocking(False)
        self.interval, self.retry, self.dns = interval, retry, tuple(dns)
        self.log, self.warn = log, warn or log
        self.view = View()
        self.l2 = l2.Bridges()  # (its sockets made at the first bridge guest)
        self.stopping = False
        self.dirty = False

    @property
    def vms(self) -> dict[str, Vm]:
        return self.view.vms

    def close(self) -> None:
        for s in (self.sock, self.wake, self.waker):
            s.close()
        self.l2.close()
        if self.store is not None and self.store.db is not None:
            self.store.db.close()
        self.store = None

    def changed(self) -> None:
        """The state file changed (a VM up or down): read it again now, not at the period."""
        self.dirty = True
        self._wake()

    def stop(self) -> None:
        """End :meth:`run` (from any thread)."""
        self.stopping = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # (full: a wake is pending; closed: it ended)
            self.waker.send(b"\0")

    def opened(self) -> Store:
        """The state file, read-only; opened again while there is none (no VM up yet)."""
        if self.store is None or self.store.db is None:
            self.store = Store(self.state, create=False)
        return self.store

    def refresh(self, everyone: bool = True) -> None:
        """Read the v6 VMs again (``everyone``: every tap is advertised on at the next look;
        else only the taps new since the last read)."""
        store = self.opened()
        self.version = _data_version(store)
        self.view.update(store.all(), everyone)
        self.listen()

    def listen(self) -> None:
        """Listen for the solicitations of every bridge with v6 guests (a bridge not there
        yet is tried again at the next look)."""
        for br in self.l2.sync(self.view.bridges()):
            if self.warn:
                self.warn(f'ra: cannot listen for solicitations on bridge "{br}"')

    def moved(self) -> bool:
        """Has another process (a CLI ``up`` or ``down``, the daemon's worker) written the
        state file since the last read? (SQLite's ``data_version``: one cheap query.)"""
        store = self.opened()
        return store.db is not None and _data_version(store) != self.version

    def lookup(self, tap: str) -> Vm | None:
        """The v6 VM of ``tap``, as the state file says now (a solicitation: rare, and the
        answer must not be a VM removed since the last read whose tap name came back)."""
        store = self.opened()
        name = store.tap_owner(tap)
        return self.view.learn(store.get(name) if name is not None else None, tap)

    def advertise(self, vm: Vm, dst: str = ALL_NODES, why: str = "periodic") -> bool:
        """Send ``vm``'s RA on its tap to ``dst``: False when the tap has no carrier or the
        send failed (then it is tried again later)."""
        assert vm.net6 is not None
        try:
            link = Link(self.sock, vm.tap)
            if not link.carrier:
                return False
            if bridged(vm):  # the router is the bridge: its MAC and MTU
                router = Link(self.sock, str(vm.options.bridge))
                message = ra.advertisement(vm.net6, router.mac, router.mtu, self.servers(vm))
                data = l2.frame(vm.mac, router.mac, GATEWAY6, IPv6Address(dst), message)
                self.l2.send(vm.tap, data)
            else:
                index = socket.if_nametoindex(vm.tap)
                message = ra.advertisement(
                    vm.net6, link.mac, link.mtu, self.servers(vm), offer=not vm.options.proxy_ndp
                )
                gateway = vm.gateway6
                assert gateway is not None
                source = struct.pack("16sI", gateway.packed, index)
                cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, source)]
                self.sock.sendmsg([message], cmsg, 0, (dst, 0, 0, index))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):  # the tap is gone: forget it
                self.view.forget(vm.tap)
            elif self.warn:
                self.warn(f"ra: cannot advertise on {vm.tap} (vm {vm.name}): {exc.strerror}")
            return False
        if self.log:
            self.log(f"ra: {vm.tap} (vm {vm.name}) {vm.net6} to {dst} ({why})")
        return True

    def servers(self, vm: Vm) -> list[IPv6Address]:
        """The RDNSS servers of ``vm``'s RA: the responder's, then the VM's own IPv6 ones."""
        return list(dict.fromkeys([*self.dns, *dns6(vm)]))

    def look(self) -> None:
        """Advertise on every waiting tap that has carrier now."""
        for tap in sorted(self.view.waiting):
            vm = self.view.vms.get(tap)
            if vm is None or self.advertise(vm):
                self.view.waiting.discard(tap)

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

    def answer_port(self, bridge: str, sock: socket.socket) -> None:
        """Read one frame a bridge's listener was handed and answer it if a solicitation of
        a v6 guest of that bridge (known now, or once the state file read again has it)."""
        try:
            data = sock.recv(2048)
        except OSError:
            return
        asked = l2.Solicitation.parse(data)
        if asked is None:
            return
        vm = self.view.port(bridge, asked.mac)
        if vm is None and self.moved():  # a guest up since the last read
            self.refresh(everyone=False)
            vm = self.view.port(bridge, asked.mac)
        if vm is not None:
            dst = ALL_NODES if asked.source.is_unspecified else str(asked.source)
            self.advertise(vm, dst, "solicited")

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Serve until :meth:`stop`, ``stop()`` is true (looked at every second) or an
        interrupt. The state file is read again every ``interval`` (every tap advertised on),
        and within a second of another process writing it (the new taps advertised on)."""
        period = 0.0
        look = 0.0
        while not (self.stopping or stop()):
            now = time.monotonic()
            if now >= period:
                self.refresh()
                period = now + self.interval
                look = now
            elif self.dirty or self.moved():
                self.dirty = False
                self.refresh(everyone=False)
                look = now
            if now >= look:
                self.listen()
                self.look()
                look = now + self.retry
            wait = min(period, look, now + 1.0) - now
            ports = {s: br for br, s in self.l2.listeners.items()}
            ready, _, _ = select.select([self.sock, self.wake, *ports], [], [], max(wait, 0.0))
            if self.wake in ready:
                with contextlib.suppress(OSError):
                    self.wake.recv(4096)
            if self.sock in ready:
                self.answer()
            for s in ready:
                if s in ports:
                    self.answer_port(ports[s], s)


def _data_version(store: Store) -> int | None:
    if store.db is None:
        return None
    return int(store.db.execute("PRAGMA data_version").fetchone()[0])


def dns6(vm: Vm) -> list[IPv6Address]:
    """The VM's IPv6 DNS servers, for RDNSS (none today: ``--dns`` takes IPv4 only)."""
    return [IPv6Address(str(d)) for d in vm.options.dns if ":" in str(d)]


def serve(state: str, verbose: bool = False, dns: Sequence[str] = ()) -> None:
    """``fireroute ra``: the responder over ``state`` in the foreground (``dns``: the RDNSS
    servers every RA names, checked before anything starts)."""
    import sys

    def log(line: str) -> None:
        print(line, flush=True)

    servers = ra.servers(dns)
    try:
        responder = Responder(state, dns=servers, log=log if verbose else None)
    except OSError as exc:
        raise FirerouteError(f"cannot start the RA responder: {exc.strerror}") from None
    if verbose:
        sys.stderr.write(f"fireroute: ra: answering on the v6 taps of {state}\n")
        sys.stderr.flush()
    try:
        responder.run()
    finally:
        responder.close()
