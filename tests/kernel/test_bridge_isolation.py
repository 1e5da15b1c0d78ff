"""Bridge guests with real frames: the guest's tap is swapped for a veth of the same name on
the bridge, its other end in a "guest" namespace with the guest's MAC and address.

A guest may send only from its own MAC and IPv4 (IP and ARP); it may not open connections to
the host itself (any of the host's addresses) or reach the metadata address, unless the
``--allow-*`` flags say so; replies to the host's own connections and ping pass. Each refusal
is shown with a counter of fireroute's rules, and beside its positive control (the same probe
passes where it is allowed, and the refused one passes once fireroute's rule is gone)."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_isolation import CLIENT, SERVER

pytestmark = pytest.mark.privileged

BR = ["--mode", "bridge", "--bridge-address", "192.168.6.1/24", "--guest-ip", "192.168.6.20/24"]
OPEN = ["--allow-host-port", "8080/tcp"]  # the anti-spoofing probes connect to the host
PING = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)
msg = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"fireroute!"  # an even length
c = sum(struct.unpack("!9H", msg))
c = (c & 0xFFFF) + (c >> 16); c = ~((c & 0xFFFF) + (c >> 16)) & 0xFFFF
s.sendto(msg[:2] + struct.pack("!H", c) + msg[4:], (sys.argv[1], 0))
try:
    while True:
        data, peer = s.recvfrom(2048)
        if peer[0] == sys.argv[1] and data[20] == 0:  # an echo reply from it
            sys.exit(0)
except OSError:
    sys.exit(1)
"""


class Guest:
    def __init__(self, host: Host, rec: dict, addr: str = "192.168.6.20/24") -> None:
        self.host = host
        self.ns = f"frg-{secrets.token_hex(3)}"
        sh("ip", "netns", "add", self.ns)
        host.sh(
            f"ip link del {rec['tap']} && "
            f"ip link add {rec['tap']} type veth peer name g0 netns {self.ns} && "
            f"ip link set {rec['tap']} master br0 up"
        )
        self.mac = rec["mac"]
        self.ip("link", "set", "g0", "address", self.mac, "up")
        self.ip("addr", "add", addr, "dev", "g0")
        self.ip("route", "add", "default", "via", "192.168.6.1")

    def ip(self, *args: str) -> None:
        sh("ip", "-n", self.ns, *args)

    def connect(self, source: str | None = None, to: str = "192.168.6.1", port: int = 8080) -> bool:
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-c", CLIENT, to, str(port)]
        p = subprocess.run(
            argv + ([source] if source else []), capture_output=True, text=True, timeout=20
        )
        return p.returncode == 0 and p.stdout.startswith("hello")

    def ping(self, to: str) -> bool:
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-c", PING, to]
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0

    def close(self) -> None:
        sh("ip", "netns", "del", self.ns, check=False)


def serve(ns: str, *specs: str) -> subprocess.Popen:
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, *specs],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.fixture
def guests() -> Iterator[list[Guest]]:
    made: list[Guest] = []
    try:
        yield made
    finally:
        for g in made:
            g.close()


@pytest.fixture
def lab(host: Host, servers, guests) -> tuple[Host, Guest]:
    rec = json.loads(host.fireroute("up", "b1", *BR, *OPEN, "--json").stdout)[0]
    servers.append(serve(host.ns, "192.168.6.1:8080"))
    guests.append(Guest(host, rec))
    return host, guests[0]


def drops(host: Host) -> int:
    out = json.loads(host.run("nft", "-j", "list", "table", "bridge", "firecracker").stdout)
    return sum(
        e["counter"]["packets"]
        for item in out["nftables"]
        if "rule" in item
        for e in item["rule"]["expr"]
        if "counter" in e
    )


def test_forged_ip_is_dropped_at_the_port(lab):
    host, guest = lab
    assert guest.connect("192.168.6.20")  # its own address: through
    guest.ip("addr", "add", "192.168.6.99/24", "dev", "g0")
    before = drops(host)
    assert not guest.connect("192.168.6.99")
    assert drops(host) > before  # fireroute's rule dropped it, nothing else
    host.run("nft", "delete", "table", "bridge", "firecracker")
    guest.ip("neigh", "flush", "dev", "g0")
    assert guest.connect("192.168.6.99")  # the control: without the table it passes


def test_forged_mac_is_dropped_at_the_port(lab):
    host, guest = lab
    assert guest.connect("192.168.6.20")
    guest.ip("link", "set", "g0", "address", "06:00:00:00:00:99")
    host.run("ip", "neigh", "flush", "dev", "br0")
    before = drops(host)
    assert not guest.connect("192.168.6.20")
    assert drops(host) > before
    guest.ip("link", "set", "g0", "address", guest.mac)  # its own MAC again: through
    host.run("ip", "neigh", "flush", "dev", "br0")
    assert guest.connect("192.168.6.20")


def test_allow_flags_without_meaning_are_refused(host: Host):
    p = host.fireroute("up", "b2", *BR[:-1], "192.168.6.21/24", "--allow-peers", check=False)
    assert p.returncode == 2 and "share a LAN segment" in p.stderr, p.stderr
    dhcp = ["--mode", "bridge", "--dhcp"]
    for flag in (["--allow-metadata"], ["--allow-host-port", "22/tcp"]):
        p = host.fireroute("up", "b2", *dhcp, *flag, check=False)
        assert p.returncode == 2 and "needs a known guest address" in p.stderr, p.stderr
    assert host.fireroute("ls", "--json").stdout.strip() == "[]"  # nothing was made
    host.fireroute("up", "b2", *BR[:-1], "192.168.6.21/24", "--allow-host-port", "22/tcp")
    p = host.fireroute("up", "b2", *BR[:-1], "192.168.6.21/24", "--fix-forward-policy", check=False)
    assert p.returncode == 2 and "--masquerade" in p.stderr
    host.fireroute("down", "b2")
    host.fireroute("up", "b2", *BR[:-1], "192.168.6.21/24", "--fix-forward-policy", "--masquerade")
    rules = [r for r in host.iptables_rules() if "fireroute" in r]
    assert any("-s 192.168.6.21/32 -i br0" in r and "ACCEPT" in r for r in rules), rules
    host.fireroute("teardown")
    assert not [r for r in host.iptables_rules() if "fireroute" in r]
    assert "bridge firecracker" not in host.nft_text()


def bridge_in_drops(host: Host) -> int:
    """packets the nft table's host protection of bridge guests dropped"""
    text = host.run("nft", "list", "chain", "ip", "firecracker", "bridge_in").stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+) .*drop", text))


def iptables_input_drops(host: Host, guest_ip: str) -> int:
    saved = host.run("iptables-nft-save", "-c").stdout.splitlines()
    hits = [  # the catch-all DROP (not the one of untrackable packets)
        line
        for line in saved
        if f"-A INPUT -s {guest_ip}/32 -i br0 -m comment" in line and "-j DROP" in line
    ]
    assert len(hits) == 1, saved
    return int(hits[0].split("]")[0].strip("[").split(":")[0])


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_host_is_closed_to_bridge_guests(host: Host, servers, guests, backend: str):
    """No new connection from a bridge guest to any of the host's addresses (the bridge's and
    the uplink's), ping and the allowed ports aside; replies to the host's own connections
    pass. Controls: the allowed port, another guest that allowed it, and the same probe once
    fireroute's rules are gone."""
    be = ["--backend", backend]
    rec = json.loads(host.fireroute("up", "b1", *BR, *be, "--json").stdout)[0]
    servers.append(serve(host.ns, "192.168.6.1:8080", "192.168.6.1:8081", "203.0.113.2:8080"))
    g = Guest(host, rec)
    guests.append(g)
    drops = (
        (lambda: bridge_in_drops(host))
        if backend == "nft"
        else (lambda: iptables_input_drops(host, "192.168.6.20"))
    )
    before = drops()
    assert not g.connect()  # the bridge's address
    assert not g.connect(to="203.0.113.2")  # another of the host's addresses
    assert drops() > before  # refused by fireroute's rule, nothing else
    assert g.ping("192.168.6.1")  # ping is allowed, as for NAT guests
    servers.append(serve(g.ns, "192.168.6.20:9000"))  # the host opens a connection: replies pass
    p = host.run(sys.executable, "-c", CLIENT, "192.168.6.20", "9000", check=False)
    assert p.stdout.startswith("hello 192.168.6.1"), p.stdout + p.stderr

    two = ["--guest-ip", "192.168.6.21/24", "--allow-host-port", "8080/tcp", *be]
    rec2 = json.loads(host.fireroute("up", "b2", *BR[:4], *two, "--json").stdout)[0]
    g2 = Guest(host, rec2, "192.168.6.21/24")
    guests.append(g2)
    assert g2.connect()  # the port it allowed is open to it
    assert not g2.connect(port=8081)  # and only that one
    assert not g.connect()  # b1 did not allow it

    # (check also says the taps are veths here)
    ok = "nftables table ip firecracker: ok" if backend == "nft" else "iptables: ok"
    assert ok in host.fireroute("check", check=False).stdout
    if backend == "nft":
        host.run("nft", "flush", "chain", "ip", "firecracker", "bridge_in")
    else:
        host.run("iptables-nft", "-F", "INPUT")  # this test's namespace: only ours are there
    assert g.connect()  # the control: the same probe passes once fireroute's rules are gone
    seen = host.fireroute("check", check=False).stdout
    gone = "iptables rule missing: -A INPUT -s 192.168.6.20/32 -i br0"
    assert (ok not in seen) if backend == "nft" else (gone in seen), seen


def test_metadata_is_closed_to_bridge_guests_unless_allowed(host: Host, servers, guests):
    sh("ip", "-n", host.inet, "addr", "add", "169.254.169.254/32", "dev", "lo")
    servers.append(serve(host.inet, "203.0.113.1:80", "169.254.169.254:80"))
    masq = ["--masquerade"]  # out of the detected uplink, towards the "internet"
    rec = json.loads(host.fireroute("up", "b1", *BR, *masq, "--json").stdout)[0]
    g = Guest(host, rec)
    guests.append(g)
    assert g.connect(to="203.0.113.1", port=80)  # out of the uplink: through
    assert not g.connect(to="169.254.169.254", port=80)
    two = ["--guest-ip", "192.168.6.21/24", "--allow-metadata", *masq]
    rec2 = json.loads(host.fireroute("up", "b2", *BR[:4], *two, "--json").stdout)[0]
    g2 = Guest(host, rec2, "192.168.6.21/24")
    guests.append(g2)
    assert g2.connect(to="169.254.169.254", port=80)  # it allowed it
    assert not g.connect(to="169.254.169.254", port=80)
