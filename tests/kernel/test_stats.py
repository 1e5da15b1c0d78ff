"""Per-VM accounting against bytes really sent: a guest (its tap swapped for a veth, a "guest"
namespace behind it) sends a known number of UDP datagrams of a known size to an echo server
in the "internet"; the kernel's counters say exactly that many, sent and received."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_isolation import Lab

pytestmark = pytest.mark.privileged

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.1", 7))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65535); s.sendto(data, peer)
"""
SEND = """
import socket, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
got = 0
for i in range(n):
    s.sendto(b"x" * size, ("203.0.113.1", 7)); got += len(s.recvfrom(65535)[0]) == size
print(got)
"""


@pytest.fixture
def lab(host: Host) -> Iterator[Lab]:
    lab = Lab(host)
    echo = subprocess.Popen(
        ["ip", "netns", "exec", host.inet, sys.executable, "-c", ECHO],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    sh("ip", "-n", host.inet, "route", "add", "172.16.0.0/16", "via", "203.0.113.2")
    lab.procs.append(echo)
    try:
        yield lab
    finally:
        lab.close()


def stats(host: Host, *names: str) -> dict[str, dict]:
    rows = json.loads(host.fireroute("stats", *names, "--json").stdout)
    return {r["name"]: r for r in rows}


def test_counts_are_exact_and_per_vm(lab: Lab):
    host = lab.host
    ns, _ = lab.guest("a")
    quiet, _ = lab.guest("b")  # another guest that sends nothing: counts nothing
    before = stats(host)["a"]
    assert before["counted"] and before["tx_packets"] == 0 and before["rx_packets"] == 0
    n, size = 25, 1000
    p = sh("ip", "netns", "exec", ns, sys.executable, "-c", SEND, str(n), str(size))
    assert p.stdout.strip() == str(n)  # every datagram went out and came back
    got = stats(host)
    ip_bytes = n * (size + 28)  # IPv4 + UDP headers; the Ethernet header is not counted
    a = got["a"]
    assert (a["tx_packets"], a["tx_bytes"]) == (n, ip_bytes), a
    assert (a["rx_packets"], a["rx_bytes"]) == (n, ip_bytes), a
    assert got["b"]["tx_packets"] == 0 and got["b"]["rx_packets"] == 0
    text = host.fireroute("stats", "a", "--prometheus").stdout
    assert f'fireroute_vm_tx_bytes_total{{vm="a"}} {ip_bytes}' in text
    assert "# TYPE fireroute_vm_rx_packets_total counter" in text
    down = json.loads(host.fireroute("down", "a", "--json").stdout)  # the final figures
    assert down["removed"] == ["a"] and down["stats"][0]["tx_bytes"] == ip_bytes


def test_what_is_not_counted_says_so(host: Host):
    host.fireroute("up", "i", "--backend", "iptables")
    host.fireroute(
        "up", "br", "--mode", "bridge", "--bridge-address", "192.168.7.1/24",
        "--guest-ip", "192.168.7.9/24",
    )  # fmt: skip
    host.fireroute("up", "n")
    got = stats(host)
    for name in ("i", "br"):
        assert got[name]["counted"] is False and got[name]["tx_bytes"] is None, got[name]
    assert got["n"]["counted"] is True and got["n"]["tx_bytes"] == 0  # the positive control
    assert 'vm="i"' not in host.fireroute("stats", "--prometheus").stdout
    p = host.fireroute("stats", "nope", check=False)
    assert p.returncode == 4 and "not known" in p.stderr


def test_restore_keeps_counters_of_elements_still_there(lab: Lab):
    host = lab.host
    ns, _ = lab.guest("a")
    sh("ip", "netns", "exec", ns, sys.executable, "-c", SEND, "3", "100")
    assert stats(host)["a"]["tx_packets"] == 3
    host.run("nft", "flush", "chain", "ip", "firecracker", "forward")  # drift elsewhere
    host.fireroute("restore")
    assert stats(host)["a"]["tx_packets"] == 3  # the set and its counters were not touched


def test_missing_counters_are_null_not_zero(host: Host):
    host.fireroute("up", "a")
    assert stats(host)["a"]["tx_bytes"] == 0  # the control: there, and zero
    host.run("nft", "delete", "table", "ip", "firecracker")
    row = stats(host)["a"]
    assert row["tx_bytes"] is None and row["rx_packets"] is None, row
