"""Bridge guests with real frames: the guest's tap is swapped for a veth of the same name on
the bridge, its other end in a "guest" namespace with the guest's MAC and address. A guest may
send only from its own MAC and IPv4 (IP and ARP); each refusal is shown with a counter of
fireroute's bridge table, and beside its positive control (the same probe passes with the real
addresses, and the forged one passes once fireroute's table is gone)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_isolation import CLIENT, SERVER

pytestmark = pytest.mark.privileged

BR = ["--mode", "bridge", "--bridge-address", "192.168.6.1/24", "--guest-ip", "192.168.6.20/24"]


class Guest:
    def __init__(self, host: Host, rec: dict) -> None:
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
        self.ip("addr", "add", "192.168.6.20/24", "dev", "g0")

    def ip(self, *args: str) -> None:
        sh("ip", "-n", self.ns, *args)

    def connect(self, source: str) -> bool:
        p = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                sys.executable,
                "-c",
                CLIENT,
                "192.168.6.1",
                "8080",
                source,
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return p.returncode == 0 and p.stdout.startswith("hello")

    def close(self) -> None:
        sh("ip", "netns", "del", self.ns, check=False)


@pytest.fixture
def lab(host: Host) -> Iterator[tuple[Host, Guest]]:
    rec = json.loads(host.fireroute("up", "b1", *BR, "--json").stdout)[0]
    server = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, sys.executable, "-c", SERVER, "192.168.6.1:8080"],
        stdout=subprocess.PIPE,
        text=True,
    )
    guest = Guest(host, rec)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield host, guest
    finally:
        server.kill()
        server.wait()
        guest.close()


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


def test_allow_flags_are_refused_in_bridge_mode(host: Host):
    for flag in (["--allow-peers"], ["--allow-metadata"], ["--allow-host-port", "22/tcp"]):
        p = host.fireroute("up", "b2", *BR[:-1], "192.168.6.21/24", *flag, check=False)
        assert p.returncode == 2 and "bridge guests" in p.stderr, p.stderr
    p = host.fireroute("up", "b2", *BR[:-1], "192.168.6.21/24", "--fix-forward-policy", check=False)
    assert p.returncode == 2 and "--masquerade" in p.stderr
    host.fireroute("up", "b2", *BR[:-1], "192.168.6.21/24", "--fix-forward-policy", "--masquerade")
    rules = [r for r in host.iptables_rules() if "fireroute" in r]
    assert any("-s 192.168.6.21/32 -i br0" in r and "ACCEPT" in r for r in rules), rules
    host.fireroute("teardown")
    assert not [r for r in host.iptables_rules() if "fireroute" in r]
    assert "bridge firecracker" not in host.nft_text()
