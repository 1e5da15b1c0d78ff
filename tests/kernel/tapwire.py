"""A guest on fireroute's own tap, without a VMM: a process opens the tap (as Firecracker does,
so the tap gains carrier and keeps every address, route and sysctl fireroute gave it) and
copies its frames to and from a veth whose far end is a "guest" namespace's eth0. The copying
end of the veth sits in a namespace of its own, so the host never sees the guest's frames but
through the tap, and every packet crosses exactly the rules fireroute made for that tap. Both
ends carry the virtio-net header (as a VMM's tap does), so a checksum the veth leaves to the
hardware is completed, not found bad."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

from tests.conftest import sh

WIRE = r"""
import ctypes, fcntl, os, select, socket, struct, sys
tap, wire_ns, dev = sys.argv[1:4]
TUNSETIFF, IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x400454CA, 0x0002, 0x1000, 0x4000
CLONE_NEWNET, SOL_PACKET, PACKET_VNET_HDR = 0x40000000, 263, 15
fd = os.open("/dev/net/tun", os.O_RDWR)
flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR  # (as a VMM opens it)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), flags))
libc = ctypes.CDLL(None, use_errno=True)
ns = os.open(f"/var/run/netns/{wire_ns}", os.O_RDONLY)
if libc.setns(ns, CLONE_NEWNET) != 0:
    raise OSError(ctypes.get_errno(), "setns")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
s.bind((dev, 0))
print("ready", flush=True)
while True:
    ready, _, _ = select.select([fd, s], [], [])
    if fd in ready:
        s.send(os.read(fd, 65536))
    if s in ready:
        data, addr = s.recvfrom(65536)
        if addr[2] != socket.PACKET_OUTGOING:
            os.write(fd, data)
"""


@dataclass
class Wired:
    """Guests wired to taps of the host namespace ``host``; :meth:`close` removes them."""

    host: str
    label: str = ""
    """what the namespaces made here are named after (default: ``host``)"""
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def guest(self, tap: str, mac: str) -> str:
        """A guest namespace whose eth0 (MAC ``mac``) is wired to ``tap``: its name."""
        n = len(self.namespaces) // 2
        base = self.label or self.host
        wire, guest = f"{base}-w{n}", f"{base}-g{n}"
        for ns in (wire, guest):
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
        sh("ip", "-n", wire, "link", "add", "w0", "type", "veth", "peer", "name", "eth0",
           "netns", guest)  # fmt: skip
        sh("ip", "netns", "exec", guest, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        sh("ip", "-n", wire, "link", "set", "w0", "up")
        sh("ip", "-n", guest, "link", "set", "eth0", "address", mac, "up")
        sh("ip", "-n", guest, "link", "set", "lo", "up")
        argv = ["nsenter", f"--net=/var/run/netns/{self.host}", sys.executable, "-c", WIRE]
        p = subprocess.Popen([*argv, tap, wire, "w0"], stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return guest

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
