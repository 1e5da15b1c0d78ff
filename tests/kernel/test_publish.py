"""Published ports with real packets (the tap swapped for a same-named veth into a guest
namespace, as in test_isolation.py): a guest's service reached through the host's port from
the uplink side, from the host's own addresses and, for a 127.0.0.1 port, from the host's
loopback; a guest reaching its own port through the host (hairpin); another guest not
(isolation decides); after ``unpublish`` nothing. Beside each refusal the same connection
that works; conflicts and bad specs refused with nothing changed; ``check`` and ``restore``
see the ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_isolation import Lab, heard, sink

pytestmark = pytest.mark.privileged

UPLINK = "203.0.113.2"


@pytest.fixture
def lab(host: Host) -> Iterator[Lab]:
    lab = Lab(host)
    try:
        yield lab
    finally:
        lab.close()


def hello(out: str, who: str) -> None:
    assert out == f"hello {who}", out


def test_a_published_port_is_reached_from_outside_and_from_the_host(lab: Lab):
    h = lab.host
    ns, rec = lab.guest("web", "--publish", "8080:80", "--publish", "127.0.0.1:2222:22")
    # the stand-in veth replaced the tap: what up set on the tap is set on it, after check saw
    # that it is missing (check watches route_localnet on a tap with a 127.0.0.1 port; it
    # also sees a veth where the tap was, which this test means)
    out = h.fireroute("check", check=False)
    assert out.returncode == 1 and "route_localnet is off" in out.stdout, out.stdout
    h.run("sysctl", "-qw", f"net.ipv4.conf.{rec['host_dev']}.route_localnet=1")
    lab.serve(ns, "0.0.0.0:80", "0.0.0.0:22")
    hello(lab.connect(h.inet, UPLINK, 8080), "203.0.113.1")  # the client's own address
    hello(lab.connect(h.ns, UPLINK, 8080), UPLINK)  # the host, at its uplink address
    hello(lab.connect(h.ns, rec["tap_ip"], 8080), rec["tap_ip"])  # and at the gateway
    hello(lab.connect(h.ns, "127.0.0.1", 2222), rec["tap_ip"])  # the loopback port
    assert lab.connect(h.ns, "127.0.0.1", 8080).startswith("FAIL")  # not the other one
    assert lab.connect(h.inet, UPLINK, 2222).startswith("FAIL")  # nor the loopback one outside
    assert lab.connect(h.inet, UPLINK, 8081).startswith("FAIL")  # an unpublished port
    hello(lab.connect(ns, UPLINK, 8080), rec["tap_ip"])  # hairpin: masqueraded to the host

    h.fireroute("unpublish", "web", "8080:80")
    assert lab.connect(h.inet, UPLINK, 8080).startswith("FAIL")
    assert lab.connect(h.ns, UPLINK, 8080).startswith("FAIL")
    hello(lab.connect(h.ns, "127.0.0.1", 2222), rec["tap_ip"])  # the other port stays
    h.fireroute("publish", "web", "9090:80")
    hello(lab.connect(h.inet, UPLINK, 9090), "203.0.113.1")


def test_udp_is_published_too(lab: Lab):
    h = lab.host
    ns, _rec = lab.guest("dns", "--publish", "5353:53/udp")
    got = sink(ns, "53", "q")
    send = f"import socket; socket.socket(2, 2).sendto(b'q', ('{UPLINK}', 5353))"
    sh("ip", "netns", "exec", h.inet, sys.executable, "-c", send)
    assert heard(got) == ["q@203.0.113.1"]


def test_another_guest_is_refused_unless_isolation_allows(lab: Lab):
    h = lab.host
    a, _ = lab.guest("a", "--publish", "8080:80")
    b, _ = lab.guest("b")
    lab.serve(a, "0.0.0.0:80")
    hello(lab.connect(h.inet, UPLINK, 8080), "203.0.113.1")  # positive control
    assert lab.connect(b, UPLINK, 8080).startswith("FAIL")  # b is no peer of a


def test_a_guest_cannot_reach_the_hosts_loopback_through_its_tap(lab: Lab):
    """route_localnet on the tap (for a 127.0.0.1 port) must not open the host's 127.0.0.0/8
    to the guest: its packets to 127.0.0.1 are dropped, beside an allowed host port that it
    reaches at the gateway address."""
    h = lab.host
    ns, rec = lab.guest("web", "--publish", "127.0.0.1:2222:22", "--allow-host-port", "2200/tcp")
    h.run("sysctl", "-qw", f"net.ipv4.conf.{rec['host_dev']}.route_localnet=1")
    lab.serve(h.ns, f"{rec['tap_ip']}:2200", "127.0.0.1:2200")
    hello(lab.connect(ns, rec["tap_ip"], 2200), rec["guest_ip"])  # the allowed host port
    # the guest sends to 127.0.0.1 out of its eth0 (its own loopback rule moved behind)
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1")
    sh("ip", "-n", ns, "rule", "add", "pref", "10", "to", "127.0.0.1", "lookup", "100")
    sh("ip", "-n", ns, "rule", "del", "pref", "0")
    sh("ip", "-n", ns, "rule", "add", "pref", "100", "lookup", "local")
    sh("ip", "-n", ns, "route", "add", "127.0.0.1", "via", rec["tap_ip"], "dev", "eth0",
       "table", "100")  # fmt: skip
    assert lab.connect(ns, "127.0.0.1", 2200, rec["guest_ip"]).startswith("FAIL")
    text = h.nft_text()
    line = next(x for x in text.splitlines() if "127.0.0.0/8 ct direction original" in x)
    assert "counter packets 0 " not in line, line  # fireroute's guard dropped them


@pytest.mark.parametrize(
    "args,named",
    [
        (["--publish", "8080"], "expected [ADDR:]HOSTPORT:GUESTPORT"),
        (["--publish", "0:80"], "ports are 1..65535"),
        (["--publish", "8080:70000"], "ports are 1..65535"),
        (["--publish", "8080:80/sctp"], "tcp or udp"),
        (["--publish", "127.0.0.2:80:80"], "only 127.0.0.1"),
        (["--publish", "8080:80", "--publish", "8080:81"], "again"),
        (["--publish", "8080:80", "--backend", "iptables"], "needs the nft backend"),
        (["--publish", "8080:80", "--mode", "clone"], "nat and cni guests"),
    ],
)
def test_bad_specs_are_refused_and_change_nothing(host: Host, args: list[str], named: str):
    p = host.fireroute("up", "web", *args, check=False)
    assert p.returncode == 2 and named in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert "fr-web" not in host.links()
    host.fireroute("up", "web", "--publish", "8080:80")  # the positive control


def test_a_port_is_one_vms(host: Host, tmp_path):
    host.fireroute("up", "a", "--publish", "8080:80", "--publish", "127.0.0.1:22:22")
    for spec in ("8080:81", f"{UPLINK}:8080:81", "127.0.0.1:22:23"):
        p = host.fireroute("up", "b", "--publish", spec, check=False)
        assert p.returncode == 3 and 'published by vm "a"' in p.stderr, p.stderr
    assert "fr-b" not in host.links()
    # another state file on the same host sees the port taken too (from the kernel's maps)
    other = host.fireroute(
        "up", "c", "--publish", "8080:82", "--pool", "172.20.0.0/16",
        env={"FIREROUTE_STATE": str(tmp_path / "other.db")}, check=False,
    )  # fmt: skip
    assert other.returncode == 3 and 'published by vm "a"' in other.stderr, other.stderr
    on_loopback = host.fireroute(
        "up", "c", "--publish", "22:23", "--pool", "172.20.0.0/16",
        env={"FIREROUTE_STATE": str(tmp_path / "other.db")}, check=False,
    )  # fmt: skip
    assert on_loopback.returncode == 3 and "127.0.0.1:22/tcp" in on_loopback.stderr
    host.fireroute("up", "b", "--publish", "8081:80/tcp", "--publish", "8080:80/udp")
    p = host.fireroute("publish", "b", "8080:80", check=False)
    assert p.returncode == 3 and 'published by vm "a"' in p.stderr
    host.fireroute("down", "a")
    host.fireroute("publish", "b", "8080:80")  # free again once a is down


def test_check_and_restore_see_the_ports(host: Host):
    host.fireroute("up", "web", "--publish", "8080:80", "--publish", "127.0.0.1:2222:22")
    assert host.fireroute("check").returncode == 0
    host.run("nft", "flush", "map", "ip", "firecracker", "pub_any")
    host.run("sysctl", "-qw", "net.ipv4.conf.fr-web.route_localnet=0")
    out = host.fireroute("check", check=False)
    assert out.returncode == 1 and "pub_any" in out.stdout and "route_localnet" in out.stdout
    host.fireroute("restore")
    assert host.fireroute("check").returncode == 0
    host.fireroute("down", "web")
    assert "pub_addr" not in host.nft_text()


def test_a_udp_flow_begun_before_publishing_reaches_the_guest(lab: Lab):
    """A datagram to the host port before it is published makes a conntrack entry to the
    host; without the flush fireroute does when publishing, the same flow's next datagrams
    would keep going there instead of to the guest."""
    h = lab.host
    ns, _rec = lab.guest("dns")
    got = sink(ns, "53", "after")
    send = (
        "import socket, sys; s = socket.socket(2, 2); s.bind(('203.0.113.1', 40053)); "
        f"s.sendto(sys.argv[1].encode(), ('{UPLINK}', 5353))"
    )
    sh("ip", "netns", "exec", h.inet, sys.executable, "-c", send, "before")
    assert "5353" in h.run("conntrack", "-L", "-p", "udp").stdout  # the flow, to the host
    plan = h.fireroute("publish", "dns", "5353:53/udp", "--dry-run").stdout
    assert "conntrack -D -p udp --orig-port-dst 5353" in plan
    h.fireroute("publish", "dns", "5353:53/udp")
    sh("ip", "netns", "exec", h.inet, sys.executable, "-c", send, "after")  # same 5-tuple
    assert heard(got) == ["after@203.0.113.1"]
