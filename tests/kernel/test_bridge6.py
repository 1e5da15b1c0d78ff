"""IPv6 of bridge guests, with real packets through fireroute's own taps (issue 24 step 15): each
guest's tap is a port of the bridge, held open and wired to a guest namespace
(tests/kernel/tapwire.py), configured as the guest script says (its /64's ``::2``, default via
``fe80::1`` on the bridge).

A bridge guest with IPv6 reaches the internet masqueraded out of the uplink's address; sends
only from its own /64 (and ICMPv6 alone from its link-local address); reaches neither the
host (any address, ``fe80::1`` included) but ping and an allowed port, nor the metadata address
unless allowed; and no guest on the bridge, whether it has IPv6 or not, gets another's router
advertisements, redirects or DHCPv6 server replies, while neighbour discovery passes. A
v4-only guest on the bridge sends no IPv6 at all. Each refusal beside its control, and beside
a counter of fireroute's rules that rose."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_bridge_isolation import drops
from tests.kernel.test_isolation import heard, sink
from tests.kernel.test_isolation6 import INTERNET6, METADATA6, PING6, UPLINK6, Lab

pytestmark = pytest.mark.privileged

BR = ["--mode", "bridge", "--bridge-address", "192.168.6.1/24"]
ICMP6_SEND = """
import socket, sys
dst, dev = sys.argv[1].split("%")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
for t in sys.argv[2:]:  # the type, then zeros (the kernel fills the checksum in)
    s.sendto(bytes([int(t), 0, 0, 0]) + bytes(36), (dst, 0, 0, socket.if_nametoindex(dev)))
"""
ICMP6_SEEN = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(float(sys.argv[2]))
last = int(sys.argv[3]) if len(sys.argv) > 3 else None  # the type that ends the wait
print("ready", flush=True)
seen = set()
try:
    while True:
        data, peer = s.recvfrom(2048)
        if peer[0].split("%")[0] == sys.argv[1]:
            seen.add(data[0])
            if data[0] == last:
                break
except socket.timeout:
    pass
print(" ".join(str(t) for t in sorted(seen)), flush=True)
"""
UDP_FROM = """
import socket, sys
src, sport, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind((src, sport))
for _ in range(3):
    s.sendto(f"{sport}".encode(), (dst, dport))
"""
RA, REDIRECT, NS, NA = 134, 137, 135, 136


class BridgeLab(Lab):
    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.n = 20

    def bridged(self, name: str, *args: str) -> tuple[str, dict]:
        """A bridge guest (IPv6 unless ``--no6``) wired to its tap: its namespace, record."""
        self.n += 1
        ns, rec = self.guest(name, *BR, "--guest-ip", f"192.168.6.{self.n}/24", *args)
        if rec["ipv6"] is not None:  # (neighbour discovery done before the probes' timeouts)
            self.run(ns, PING6, "fe80::1%eth0")
        return ns, rec

    def run(self, ns: str, script: str, *args: str) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, sys.executable, "-c", script, *args, check=False)

    def watch(self, ns: str, script: str, *args: str) -> subprocess.Popen:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    def link_local(self, ns: str) -> str:
        doc = json.loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", "eth0").stdout)
        addrs = [a["local"] for d in doc for a in d["addr_info"] if a["local"].startswith("fe80")]
        assert len(addrs) == 1, doc
        return addrs[0]

    def drops(self) -> int:
        """Packets the bridge table's rules dropped (each of its rules counts)."""
        return drops(self.host)


@pytest.fixture
def lab(host: Host) -> Iterator[BridgeLab]:
    lab = BridgeLab(host)
    try:
        yield lab
    finally:
        lab.close()


def test_bridge_guests_reach_the_internet_masqueraded_over_v6(lab: BridgeLab):
    a, ra = lab.bridged("a")
    b, rb = lab.bridged("b")
    assert ra["ipv6"]["gateway"] == "fe80::1" and ra["ipv6"]["block"] != rb["ipv6"]["block"]
    lab.serve(lab.host.inet, f"[{INTERNET6}]:8080", "203.0.113.1:8080")
    for ns in (a, b):
        assert lab.connect(ns, INTERNET6, 8080) == f"hello {UPLINK6}"
    assert "bridge firecracker: ok" in lab.host.fireroute("check").stdout


def test_bridge_guests_reach_each_other_over_v6_as_over_v4(lab: BridgeLab):
    """Bridge guests share a segment: they reach each other in both families, as bridge mode
    always had it (``--allow-peers`` stays refused: isolation.md). The path is through the
    host both ways (each guest's /64 is routed onto the bridge; the host's redirects are kept
    from the guests), and crosses the bridge table's source check: from a forged source the
    same connection fails."""
    a, ra = lab.bridged("a")
    b, rb = lab.bridged("b")
    lab.serve(b, "[::]:7000")  # (both families: a second socket on 0.0.0.0:7000 raced it)
    assert lab.connect(a, rb["ipv6"]["address"], 7000) == f"hello {ra['ipv6']['address']}"
    assert lab.connect(a, rb["guest_ip"], 7000) == f"hello ::ffff:{ra['guest_ip']}"
    # the host's redirect (b is on the same link) was kept from a: without that, a would send
    # to b directly while b's replies still crossed the host, out of any connection it saw
    out = lab.host.run("nft", "list", "chain", "bridge", "firecracker", "output").stdout
    assert "nd-redirect counter packets 0 " not in out and "counter packets" in out, out
    sh("ip", "-n", a, "-6", "addr", "add", "fd00:bad::2/64", "dev", "eth0", "nodad")
    before = lab.drops()
    assert lab.connect(a, rb["ipv6"]["address"], 7000, "fd00:bad::2").startswith("FAIL")
    assert lab.drops() > before


def test_the_host_is_closed_to_bridge_guests_over_v6_but_ping_and_an_allowed_port(
    lab: BridgeLab,
):
    a, ra = lab.bridged("a")
    lab.serve(lab.host.ns, "[::]:2222", "[::]:2223")
    own = ra["ipv6"]["address"]
    # from its own /64 (the ip6 table's bridge_in), and from its link-local address (the
    # bridge port lets only ICMPv6 through from there)
    for target, source in (("fe80::1%eth0", own), (UPLINK6, own), ("fe80::1%eth0", None)):
        assert lab.connect(a, target, 2222, source).startswith("FAIL"), (target, source)
    # the controls: the gateway answers pings; a guest that allowed a port reaches that one
    ping = lab.run(a, PING6, "fe80::1%eth0")
    assert ping.returncode == 0 and ping.stdout.startswith("echo reply from fe80::1"), ping
    b, rb = lab.bridged("b", "--allow-host-port", "2223/tcp")
    assert lab.connect(b, UPLINK6, 2223) == f"hello {rb['ipv6']['address']}"
    assert lab.connect(b, "fe80::1%eth0", 2223, rb["ipv6"]["address"]).startswith("hello ")
    assert lab.connect(b, UPLINK6, 2222).startswith("FAIL")  # and that port only
    assert lab.connect(a, UPLINK6, 2223).startswith("FAIL")  # a did not allow it


def test_a_bridge_guests_forged_v6_source_is_dropped_at_its_port(lab: BridgeLab):
    a, ra = lab.bridged("a")
    _, rb = lab.bridged("b")
    own, other = ra["ipv6"]["address"], rb["ipv6"]["address"]
    for forged in ("fd00:bad::2", other):  # an outside /64, and the other guest's address
        sh("ip", "-n", a, "-6", "addr", "add", f"{forged}/64", "dev", "eth0", "nodad")
    got = sink(lab.host.inet, "9999", "5000", "::")
    # (the gateway's MAC known first: a neighbour solicitation from a forged source is dropped
    # at the port too, and would hold every datagram back)
    assert lab.run(a, PING6, "fe80::1%eth0").returncode == 0
    before = lab.drops()
    for src in ("fd00:bad::2", other, own):  # (own last: the first to arrive ends the wait)
        lab.run(a, UDP_FROM, src, "5000", INTERNET6, "9999")
    seen = heard(got)
    assert seen == [f"5000@{UPLINK6}"], seen  # the control: its own address passes (once)
    assert lab.drops() >= before + 6  # 3 datagrams of each forged source, at the port


def test_a_bridge_guests_router_advertisements_never_reach_another(lab: BridgeLab):
    """The RA guard on every port: a guest's router advertisement and redirect (and DHCPv6
    server replies, by source port) reach no other guest, whether it has IPv6 or not; its
    neighbour solicitation does (the control: neighbour discovery works)."""
    a, ra = lab.bridged("a")
    b, rb = lab.bridged("b")
    mine = lab.link_local(a)
    seen = lab.watch(b, ICMP6_SEEN, mine, "10", str(NS))  # (NS sent last: it ends the wait)
    before = lab.drops()
    lab.run(a, ICMP6_SEND, "ff02::1%eth0", str(RA), str(REDIRECT), str(NS))
    got = seen.communicate(timeout=10)[0].split()
    assert got == [str(NS)], got  # NS through, RA and redirect not
    assert lab.drops() >= before + 2
    # DHCPv6 server replies (source port 547) from a's own address: dropped; from another
    # source port: through (the route between the two /64s is the host's)
    replies = sink(b, "546", "548", "::")  # (548 sent last: it ends the wait)
    for sport in ("547", "548"):
        lab.run(a, UDP_FROM, ra["ipv6"]["address"], sport, rb["ipv6"]["address"], "546")
    got = heard(replies)
    assert got == [f"548@{ra['ipv6']['address']}"], got


def test_a_v4_only_bridge_guest_sends_no_ipv6(lab: BridgeLab):
    """A v4-only guest's IPv6 (its router advertisements included) stops at its port; the
    v6 guest beside it is the control."""
    a, _ = lab.bridged("a")
    four, rec = lab.bridged("four", "--no6", "--masquerade")
    assert rec["ipv6"] is None
    before = lab.drops()
    ping = lab.run(four, PING6, "fe80::1%eth0")
    assert ping.returncode != 0, ping
    assert lab.drops() > before
    seen = lab.watch(a, ICMP6_SEEN, lab.link_local(four), "2")
    lab.run(four, ICMP6_SEND, "ff02::1%eth0", str(RA), str(NS))
    assert seen.communicate(timeout=10)[0].split() == []
    ping = lab.run(a, PING6, "fe80::1%eth0")  # the control
    assert ping.returncode == 0, ping
    lab.serve(lab.host.inet, "203.0.113.1:8080")
    assert lab.connect(four, "203.0.113.1", 8080).startswith("hello ")  # its IPv4 passes


def test_the_metadata_address_is_closed_to_bridge_guests_over_v6_unless_allowed(
    lab: BridgeLab,
):
    lab.serve(lab.host.inet, f"[{METADATA6}]:80")
    a, _ = lab.bridged("a")
    assert lab.connect(a, METADATA6, 80).startswith("FAIL")
    b, _ = lab.bridged("b", "--allow-metadata")  # the control
    assert lab.connect(b, METADATA6, 80) == f"hello {UPLINK6}"


def test_down_and_teardown_leave_no_ipv6_of_bridge_guests(lab: BridgeLab):
    host = lab.host
    _, ra = lab.bridged("a")
    _, rb = lab.bridged("b")
    host.fireroute("down", "a")
    routes = host.run("ip", "-6", "route", "show", "dev", "br0").stdout
    assert rb["ipv6"]["block"] in routes and ra["ipv6"]["block"] not in routes, routes
    assert "fe80::1/64" in host.run("ip", "-6", "addr", "show", "dev", "br0").stdout
    lab.bridged("four", "--no6")
    host.fireroute("down", "b")  # the last guest with IPv6: the gateway goes, the bridge stays
    assert "fe80::1/64" not in host.run("ip", "-6", "addr", "show", "dev", "br0").stdout
    assert rb["ipv6"]["block"] not in host.run("ip", "-6", "route").stdout
    assert "table ip6 firecracker" not in host.nft_text()
    assert "ok" in host.fireroute("check").stdout
    host.fireroute("teardown")
    assert "firecracker" not in host.nft_text() and "br0" not in host.links()


def test_the_ra_guard_holds_on_a_bridge_of_v4_only_guests(lab: BridgeLab):
    """The change for bridges without IPv6 (docs/ipv6-plan.md 7.5): a v4-only guest's router
    advertisement reaches no other guest. The control: with the bridge table's rules gone
    (flushed behind fireroute's back) the same advertisement arrives; and IPv4 between the
    two passes all along."""
    one, _ = lab.bridged("one", "--no6")
    two, rec = lab.bridged("two", "--no6")
    lab.serve(two, "0.0.0.0:7000")
    assert lab.connect(one, rec["guest_ip"], 7000).startswith("hello ")

    def heard(*until: str) -> list[str]:
        seen = lab.watch(two, ICMP6_SEEN, lab.link_local(one), *until)
        lab.run(one, ICMP6_SEND, "ff02::1%eth0", str(RA))
        return seen.communicate(timeout=20)[0].split()

    before = lab.drops()
    assert heard("2") == []
    assert lab.drops() > before
    lab.host.run("nft", "flush", "chain", "bridge", "firecracker", "prerouting")
    assert heard("10", str(RA)) == [str(RA)]  # the control (it ends the wait when it arrives)


def test_plan_of_a_bridge_guest_with_ipv6_prints_what_up_does(host: Host):
    """``plan`` changes nothing, and its script, run by hand, leaves the kernel as ``up`` does
    (the bridge already there, made by a v4-only guest: the gateway fe80::1 joins it)."""
    from tests.kernel.test_plan_truth import kernel

    def everything() -> tuple:
        routes = json.loads(host.run("ip", "-6", "-j", "route").stdout)
        ours = sorted(f"{r['dst']} {r['dev']}" for r in routes if r.get("protocol") != "kernel")
        doc = json.loads(host.run("ip", "-6", "-j", "addr", "show", "dev", "br0").stdout)
        gateway = [a for d in doc for a in d["addr_info"] if a["local"] == "fe80::1"]
        return kernel(host), ours, gateway

    host.fireroute("up", "four", *BR, "--guest-ip", "192.168.6.20/24")
    b = ["b", *BR, "--guest-ip", "192.168.6.21/24", "--ipv6", "--pool6", "fd3c:9a1e:52b0::/48"]
    before, state = everything(), host.state.read_bytes()
    script = host.fireroute("plan", *b).stdout
    assert everything() == before and host.state.read_bytes() == state  # nothing changed
    host.fireroute("up", *b)
    by_up = everything()
    assert by_up != before and by_up[2] and by_up[1]  # the control: up changed it
    host.fireroute("down", "b")
    assert everything() == before
    host.sh(script)  # the printed plan, typed by a person
    assert everything() == by_up
