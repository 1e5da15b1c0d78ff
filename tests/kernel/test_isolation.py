"""Guest isolation with real packets. A VM's tap is swapped for a veth pair of the same name
whose other end sits in a "guest" namespace with the guest's address, so packets cross exactly
the rules fireroute made for that tap (a tap without a VMM carries nothing; the booted-guest
tests in tests/e2e cover the real tap)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh

pytestmark = pytest.mark.privileged

SERVER = """
import socket, sys, threading
def serve(addr, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16)
    while True:
        c, peer = s.accept(); c.sendall(("hello " + peer[0] + "\\n").encode()); c.close()
for spec in sys.argv[1:]:
    a, p = spec.rsplit(":", 1)
    threading.Thread(target=serve, args=(a, int(p)), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
CLIENT = """
import socket, sys
s = socket.socket()
if len(sys.argv) > 3:
    s.bind((sys.argv[3], 0))
s.settimeout(1.5)  # (a dropped SYN: FAIL after 1.5 s)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.settimeout(15); print(s.makefile().readline().strip())  # (connected: its server's line)
except OSError as e:
    print("FAIL", e); sys.exit(1)
"""


RAW_UDP = """
import socket, struct, sys
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                  socket.inet_aton(src), socket.inet_aton(dst))
csum = sum(struct.unpack("!10H", hdr))
csum = (csum & 0xFFFF) + (csum >> 16)
hdr = hdr[:10] + struct.pack("!H", ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF) + hdr[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3):
    s.sendto(hdr + udp, (dst, 0))
"""
UDP_SINK = """
import socket, sys
at = sys.argv[3] if len(sys.argv) > 3 else "0.0.0.0"  # ("::": IPv6)
last = sys.argv[4] if len(sys.argv) > 4 else None  # the payload that ends the wait
s = socket.socket(socket.AF_INET6 if ":" in at else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((at, int(sys.argv[1]))); s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
seen = set()
try:
    while True:
        data, peer = s.recvfrom(2048); seen.add(data.decode() + "@" + peer[0])
        if data.decode() == last:
            break
except socket.timeout:
    pass
print(" ".join(sorted(seen)), flush=True)
"""
"""A UDP sink: PORT, the seconds it waits for the next datagram, the address it binds, and
the payload after which it stops waiting (sent last, by a sender that must get through: on a
busy machine the wait then ends on what was sent, not on a clock)."""


def sink(
    ns: str, port: str, last: str, at: str = "0.0.0.0", wait: float = 10.0
) -> subprocess.Popen:
    """A :data:`UDP_SINK` in namespace ``ns`` on ``port``, bound at ``at``, ready: it ends at
    the payload ``last`` (so a sender that must get through sends it last: whatever was sent
    before it on the same path was judged by then), or, failing that, after ``wait`` seconds
    without a datagram. :func:`heard` says what it saw."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", UDP_SINK, port, str(wait), at, last]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def heard(p: subprocess.Popen) -> list[str]:
    """What a :func:`sink` saw (``payload@peer``, sorted, each once), once it ended."""
    return p.communicate(timeout=30)[0].split()


API_UP = """
import json, sys
import fireroute
from fireroute import request
from fireroute.cli import parser
from fireroute.cli.inputs import _options
args = parser.parse(["up", *sys.argv[2:]])  # the CLI's words, as an API call
vm = fireroute.Host(sys.argv[1]).up(args.names[0], **request.fields_of(_options(args)))
print(json.dumps([vm.as_dict()]))
"""


class Lab:
    def __init__(self, host: Host, door: str = "cli") -> None:
        self.host = host
        self.door = door
        """how guests are brought up: the CLI, or the Python API (fireroute.Host)"""
        self.guests: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def serve(self, ns: str, *specs: str) -> None:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, *specs],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        self.procs.append(p)

    def guest(self, name: str, *args: str) -> tuple[str, dict]:
        """fireroute up NAME, then put a veth named like its tap where the tap was."""
        rec = json.loads(self.up(name, *args))[0]
        ns = f"{self.host.ns}-g{len(self.guests)}"
        sh("ip", "netns", "add", ns)
        self.guests.append(ns)
        tap = rec["host_dev"]
        self.host.run("ip", "link", "del", tap)
        self.host.run("ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.host.run("ip", "addr", "add", f"{rec['tap_ip']}/{rec['prefix']}", "dev", tap)
        self.host.run("ip", "link", "set", tap, "up")
        sh("ip", "-n", ns, "addr", "add", f"{rec['guest_ip']}/{rec['prefix']}", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", rec["tap_ip"])
        return ns, rec

    def up(self, name: str, *args: str) -> str:
        if self.door == "cli":
            return self.host.fireroute("up", name, *args, "--json").stdout
        argv = ["nsenter", f"--net=/var/run/netns/{self.host.ns}", sys.executable, "-c", API_UP]
        return sh(*argv, str(self.host.state), name, *args).stdout

    def connect(self, ns: str, addr: str, port: int, source: str | None = None) -> str:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, addr, str(port)]
        return sh(*argv, *([source] if source else []), check=False).stdout.strip()

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in self.guests:
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(params=["cli", "api"])
def lab(host: Host, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """Every isolation test runs twice: guests brought up by the CLI, and by the Python API."""
    lab = Lab(host, request.param)
    # the "internet" answers on 203.0.113.1:80 and plays a cloud metadata service too
    sh("ip", "-n", host.inet, "addr", "add", "169.254.169.254/32", "dev", "lo")
    sh("ip", "-n", host.inet, "route", "add", "172.16.0.0/16", "via", "203.0.113.2")
    lab.serve(host.inet, "203.0.113.1:80", "169.254.169.254:80")
    try:
        yield lab
    finally:
        lab.close()


def counter(host: Host, needle: str) -> int:
    for line in host.nft_text().splitlines():
        if needle in line and "counter packets" in line:
            return int(re.search(r"counter packets (\d+)", line).group(1))  # type: ignore[union-attr]
    raise AssertionError(f"no counter on a rule with {needle!r}")


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_egress_is_masqueraded(lab: Lab, backend: str):
    ns, _ = lab.guest("g", "--backend", backend)
    assert lab.connect(ns, "203.0.113.1", 80) == "hello 203.0.113.2"


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_spoofed_source_is_dropped(lab: Lab, backend: str):
    """Raw IP packets (no socket layer can rewrite their source) from the guest's namespace:
    with its own source they arrive (masqueraded); with a forged one, never."""
    ns, rec = lab.guest("g", "--backend", backend)
    _, other = lab.guest("h", "--backend", backend)  # forging another guest's address
    for dev in ("all", "default", rec["host_dev"]):  # no help from rp_filter: ours must drop
        lab.host.run("sysctl", "-qw", f"net/ipv4/conf/{dev}/rp_filter=0")
    got = sink(lab.host.inet, "5555", "own")
    forged = ((other["guest_ip"], "forged"), ("10.1.2.3", "far"))
    for src, tag in (*forged, (rec["guest_ip"], "own")):  # (own last: it ends the wait)
        sh(
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-c",
            RAW_UDP,
            src,
            "203.0.113.1",
            "5555",
            tag,
        )
    seen = heard(got)
    assert seen == ["own@203.0.113.2"], seen  # the own source arrives: the positive control
    if backend == "nft":
        assert counter(lab.host, "!= @vms") >= 6  # both forged sources dropped and counted
    else:  # the tap's source check in raw PREROUTING, before conntrack, counted them
        saved = lab.host.run("iptables-nft-save", "-c").stdout.splitlines()
        drop = [
            line
            for line in saved
            if f"-A PREROUTING ! -s {rec['guest_ip']}/32 -i {rec['host_dev']} -m comment" in line
            and line.endswith("-j DROP")
        ]
        assert len(drop) == 1, saved
        assert int(drop[0].split("]")[0].strip("[").split(":")[0]) >= 6, drop


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_a_clone_cannot_ride_a_neighbour_clones_established_flow(host: Host, backend: str):
    """Clones, each in its own namespace: a guest forging its neighbour clone's address on
    that clone's established flow. Its namespace masquerades only the guest's own network, so
    the forged source would leave unchanged and be the neighbour's flow to the host's
    conntrack; the namespace drops it as it is forwarded (both backends; the host's nft set
    lookup too). The neighbour's own packets, before and after, arrive (the control)."""
    from tests.kernel.tapwire import Wired

    guests: dict[str, tuple[str, dict, Wired]] = {}
    try:
        for name in ("a", "b"):
            rec = json.loads(
                host.fireroute("up", name, "--mode", "clone", "--backend", backend, "--json").stdout
            )[0]
            ns = Wired(rec["netns"], label=f"{host.ns}-c{name}")  # (its tap is in its netns)
            guests[name] = ("", rec, ns)
            g = ns.guest(rec["tap"], rec["mac"])
            guests[name] = (g, rec, ns)
            sh("ip", "-n", g, "addr", "add", f"{rec['guest_ip']}/{rec['prefix']}", "dev", "eth0")
            sh("ip", "-n", g, "route", "add", "default", "via", rec["tap_ip"])
            for dev in ("all", "default"):  # no help from rp_filter: the rules must drop
                sh("ip", "netns", "exec", rec["netns"], "sysctl", "-qw",
                   f"net/ipv4/conf/{dev}/rp_filter=0")  # fmt: skip
        for dev in ("all", "default", "fr-a", "fr-b"):
            host.run("sysctl", "-qw", f"net/ipv4/conf/{dev}/rp_filter=0")
        (ga, _, _), (gb, rb, _) = guests["a"], guests["b"]
        forged = rb["veth"]["netns_ip"]  # b's address as the host sees it
        seen = ride(host, (gb, rb["guest_ip"]), (ga, forged))
        assert seen == ["again@203.0.113.2", "own@203.0.113.2"], seen
    finally:
        for _, _, ns in guests.values():
            ns.close()


def test_guests_isolated_unless_both_allow_peers(lab: Lab):
    a, ra = lab.guest("a")
    b, rb = lab.guest("b")
    lab.serve(b, f"{rb['guest_ip']}:9000")
    assert lab.connect(a, rb["guest_ip"], 9000).startswith("FAIL")
    c, rc = lab.guest("c", "--allow-peers")
    d, rd = lab.guest("d", "--allow-peers")
    lab.serve(d, f"{rd['guest_ip']}:9000")
    assert lab.connect(c, rd["guest_ip"], 9000) == f"hello {rc['guest_ip']}"
    assert lab.connect(a, rd["guest_ip"], 9000).startswith("FAIL")  # a did not allow it


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_host_reachable_only_on_allowed_ports(lab: Lab, backend: str):
    ns, rec = lab.guest("g", "--backend", backend, "--allow-host-port", "7001/tcp")
    lab.serve(lab.host.ns, "0.0.0.0:7000", "0.0.0.0:7001")
    gw = rec["tap_ip"]
    assert lab.connect(ns, gw, 7000).startswith("FAIL")
    assert lab.connect(ns, "203.0.113.2", 7000).startswith("FAIL")  # another host address
    assert lab.connect(ns, gw, 7001) == f"hello {rec['guest_ip']}"
    ping = sh("ip", "netns", "exec", ns, "busybox", "ping", "-c1", "-W2", gw, check=False)
    assert ping.returncode == 0, "a guest may still ping its gateway"
    # and the host still reaches the guest (replies come back through the input chain)
    lab.serve(ns, f"{rec['guest_ip']}:9100")
    assert lab.connect(lab.host.ns, rec["guest_ip"], 9100) == f"hello {gw}"


UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in sys.argv[2:]:
    for _ in range(3):
        s.sendto(("to" + port).encode(), (sys.argv[1], int(port)))
"""


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_host_udp_port_allowed_and_only_it(lab: Lab, backend: str):
    ns, rec = lab.guest("g", "--backend", backend, "--allow-host-port", "5353/udp")
    # the port not allowed first; the allowed one's last datagram ends its sink's wait, so
    # the other's were judged by then, and its sink is ended from the host itself
    allowed, other = sink(lab.host.ns, "5353", "to5353"), sink(lab.host.ns, "5354", "to5354")
    sh("ip", "netns", "exec", ns, sys.executable, "-c", UDP_SEND, rec["tap_ip"], "5354", "5353")
    assert heard(allowed) == [f"to5353@{rec['guest_ip']}"]  # the allowed port: through
    sh("ip", "netns", "exec", lab.host.ns, sys.executable, "-c", UDP_SEND, "127.0.0.1", "5354")
    assert heard(other) == ["to5354@127.0.0.1"]  # from the guest, not allowed: dropped


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_metadata_blocked_unless_allowed(lab: Lab, backend: str):
    ns, _ = lab.guest("g", "--backend", backend)
    assert lab.connect(ns, "169.254.169.254", 80).startswith("FAIL")
    ok, _ = lab.guest("m", "--backend", backend, "--allow-metadata")
    assert lab.connect(ok, "169.254.169.254", 80) == "hello 203.0.113.2"


def test_docker_forward_drop_detected_and_fixed(lab: Lab):
    host = lab.host
    host.run("iptables-nft", "-P", "FORWARD", "DROP")  # what Docker does
    host.run("iptables-nft", "-N", "DOCKER-USER")
    host.run("iptables-nft", "-A", "FORWARD", "-j", "DOCKER-USER")
    before = host.run("iptables-nft-save", "-t", "filter").stdout
    doc = host.fireroute("doctor", "--json", check=False)
    assert doc.returncode == 1
    assert any(
        f["level"] == "fail" and "FORWARD policy is DROP" in f["what"]
        for f in json.loads(doc.stdout)
    )
    first = host.fireroute("up", "probe")  # the first VM of a table warns about it
    assert "warning: iptables-nft filter FORWARD policy is DROP" in first.stderr
    assert first.stderr.count("\n") == 1
    host.fireroute("down", "probe")
    ns, _ = lab.guest("plain")
    assert lab.connect(ns, "203.0.113.1", 80).startswith("FAIL")  # the silent failure
    fixed, _ = lab.guest("fixed", "--fix-forward-policy")
    assert lab.connect(fixed, "203.0.113.1", 80) == "hello 203.0.113.2"
    host.fireroute("down", "fixed")
    host.fireroute("down", "plain")

    def strip(text: str) -> list[str]:
        return [
            re.sub(r" \[\d+:\d+\]$", "", line)
            for line in text.splitlines()
            if not line.startswith("#")
        ]  # policy counters move with the test traffic

    after = host.run("iptables-nft-save", "-t", "filter").stdout
    assert strip(after) == strip(before)  # policy, chains and rules exactly as they were


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
seen = []
last = sys.argv[3] if len(sys.argv) > 3 else None  # the payload that ends the wait
try:
    while True:
        data, peer = s.recvfrom(2048); seen.append(data.decode() + "@" + peer[0])
        s.sendto(b"ack", peer)  # a reply: the guest's flow is now an established connection
        if data.decode() == last:
            break
except socket.timeout:
    pass
print(" ".join(sorted(set(seen))), flush=True)
"""


def replied(host: Host, port: str, timeout: float = 10.0) -> None:
    """Wait until conntrack holds the UDP flow to ``port`` as replied (an established one)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = host.run("conntrack", "-L", "-p", "udp", "--dport", port).stdout
        if port in seen and "[UNREPLIED]" not in seen:
            return
        assert time.monotonic() < deadline, f"no reply seen on the flow to {port}: {seen}"
        time.sleep(0.05)


def ride(host: Host, guest: tuple[str, str], forger: tuple[str, str]) -> list[str]:
    """The established-flow ride: ``guest`` (its namespace, its source as sent) sends raw UDP
    to the internet's 203.0.113.1:5555, whose echo makes the flow established; ``forger`` (a
    neighbour's namespace, the source it forges: the guest's as the host sees it) sends on
    that flow; the guest sends again, which ends the wait. What the echo saw, sorted."""
    argv = ["ip", "netns", "exec", host.inet, sys.executable, "-c", UDP_ECHO, "5555", "10"]
    echo = subprocess.Popen([*argv, "again"], stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    send = [sys.executable, "-c", RAW_UDP]
    (ns, src), (bad_ns, bad_src) = guest, forger
    sh("ip", "netns", "exec", ns, *send, src, "203.0.113.1", "5555", "own")
    replied(host, "5555")  # the echo's reply makes the flow established
    sh("ip", "netns", "exec", bad_ns, *send, bad_src, "203.0.113.1", "5555", "forged")
    time.sleep(0.3)  # (the forged datagrams judged before the last is sent)
    sh("ip", "netns", "exec", ns, *send, src, "203.0.113.1", "5555", "again")
    return sorted(echo.communicate(timeout=30)[0].split())


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_a_neighbour_cannot_ride_a_guests_established_flow(lab: Lab, backend: str):
    """conntrack knows no interface: a packet from guest b with guest a's address and the ports
    of a's established flow is that flow's packet to conntrack. The source check stands before
    the established accept (nft: in the same chain; iptables: in raw PREROUTING, before
    conntrack, as the shared RELATED,ESTABLISHED accept leads FORWARD), so it is dropped (and
    counted) all the same; a's own packets on the same flow, before and after, arrive (the
    control)."""
    a, ra = lab.guest("a", "--backend", backend)
    b, rb = lab.guest("b", "--backend", backend)
    for dev in ("all", "default", rb["host_dev"]):  # no help from rp_filter: ours must drop
        lab.host.run("sysctl", "-qw", f"net/ipv4/conf/{dev}/rp_filter=0")
    check = (
        "iifname @taps iifname . ip saddr != @vms"
        if backend == "nft"
        else f'iifname "{rb["host_dev"]}" ip saddr != {rb["guest_ip"]}'
    )
    before = counter(lab.host, check)
    seen = ride(lab.host, (a, ra["guest_ip"]), (b, ra["guest_ip"]))  # b, as a, on a's flow
    assert seen == ["again@203.0.113.2", "own@203.0.113.2"], seen
    assert counter(lab.host, check) >= before + 3
