"""Inputs that would break another guest or the host are refused before anything changes: a
one-line error, exit 2 (bad input) or 3 (conflict with what the host or another VM holds), and
kernel and state file exactly as they were. Each refusal has its accepted neighbour beside it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Host
from tests.reliability.helpers import one_line_error

pytestmark = pytest.mark.privileged

BR = ["--mode", "bridge", "--bridge-address", "192.168.7.1/24"]


def world(host: Host) -> tuple:
    return (
        host.run("ip", "-4", "-d", "addr", "show").stdout,  # IPv6 DAD states change by themselves
        host.run("ip", "-4", "route", "show", "table", "all").stdout,
        host.nft_text(),
        sorted(host.iptables_rules()),
        host.state.read_bytes() if host.state.exists() else b"",
    )


def refused(host: Host, code: int, *args: str, says: str) -> None:
    before = world(host)
    p = host.fireroute(*args, check=False)
    one_line_error(p.returncode, p.stderr)
    assert p.returncode == code, (args, p.returncode, p.stderr)
    assert says in p.stderr, (args, p.stderr)
    after = world(host)
    if not before[4]:  # a refused first up may leave the new state file, empty
        assert json.loads(host.fireroute("ls", "--json").stdout) == []
        after = (*after[:4], b"")
    assert after == before, args


def test_uplink_must_be_the_hosts_way_out(host: Host):
    host.fireroute("up", "w1")
    refused(host, 2, "up", "w2", "--uplink", "fr-w1", says="a link fireroute made")
    refused(host, 2, "up", "w2", "--uplink", "lo", says="loopback")
    host.run("ip", "tuntap", "add", "dev", "tapx", "mode", "tap")
    refused(host, 2, "up", "w2", "--uplink", "tapx", says="a tap")
    host.fireroute("up", "w2", "--uplink", "up0")  # the real uplink, named: accepted


def test_clone_address_must_be_free_and_unicast(host: Host):
    host.fireroute("up", "c1", "--mode", "clone", "--clone-address", "172.31.9.9")
    for bad in ("127.0.0.1", "0.0.0.0", "224.0.0.5", "255.255.255.255"):
        refused(host, 2, "up", "c2", "--mode", "clone", "--clone-address", bad, says=bad)
    refused(host, 3, "up", "c2", "--mode", "clone", "--clone-address", "172.31.9.9", says='"c1"')
    refused(  # inside c1's veth block
        host, 3, "up", "c2", "--mode", "clone", "--clone-address", "10.200.0.2", says='"c1"'
    )
    clone = ["up", "c2", "--mode", "clone", "--clone-address"]
    # the host's own uplink address, and an address of its uplink's subnet
    refused(host, 3, *clone, "203.0.113.2", says="an address of the host")
    refused(host, 3, *clone, "203.0.113.9", says="inside the host's route")
    host.fireroute("up", "c2", "--mode", "clone", "--clone-address", "172.31.9.10")
    host.fireroute("teardown")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--guest-ip", "192.168.7.1/24"], "the bridge's own address"),
        (["--guest-ip", "192.168.7.0/24"], "network address"),
        (["--guest-ip", "192.168.7.255/24"], "broadcast address"),
        (["--range", "192.168.7.250-192.168.8.3"], "leaves the bridge's subnet"),
        (["--range", "192.168.7.200-192.168.7.255"], "broadcast"),
        (["--guest-ip", "192.168.7.9/24", "--gateway", "10.9.9.9"], "not on the guests' link"),
        (["--guest-ip", "192.168.7.9/24", "--gateway", "192.168.7.9"], "own address"),
    ],
)
def test_bridge_addresses_must_fit_the_bridge(host: Host, args: list[str], says: str):
    refused(host, 2, "up", "b1", *BR, *args, says=says)
    host.fireroute("up", "b1", *BR, "--guest-ip", "192.168.7.9/24")  # the neighbour: accepted
    host.fireroute("teardown")


def test_a_new_bridge_cannot_take_an_address_of_the_uplinks_subnet(host: Host):
    args = ["up", "b1", "--mode", "bridge", "--guest-ip", "203.0.113.20/24"]
    refused(host, 3, *args, "--bridge-address", "203.0.113.7/24", says="overlaps")
    host.fireroute("up", "b1", *BR, "--guest-ip", "192.168.7.9/24")  # its own subnet: fine
    host.fireroute("teardown")


def test_bridge_guest_cannot_take_a_nat_guests_address_or_mac(host: Host):
    host.fireroute("up", "n1")  # 172.16.0.2, MAC 06:00:AC:10:00:02
    nat = ["--mode", "bridge", "--bridge-address", "172.16.0.1/24", "--bridge", "br9"]
    refused(host, 3, "up", "b1", *nat, "--guest-ip", "172.16.0.2/24", says="already leased")
    static = ["up", "b1", *BR, "--guest-ip", "192.168.7.9/24", "--mac"]
    refused(host, 3, *static, "06:00:AC:10:00:02", says='"n1"')
    refused(host, 2, *static, "00:00:00:00:00:00", says="all-zero")
    host.fireroute("up", "b1", *BR, "--guest-ip", "192.168.7.9/24", "--mac", "06:00:C0:A8:07:09")
    host.fireroute("teardown")


def test_adopted_bridge_keeps_its_address_and_lists_are_deduplicated(host: Host):
    host.run("ip", "link", "add", "br7", "type", "bridge")
    host.run("ip", "addr", "add", "192.168.8.1/24", "dev", "br7")
    adopt = ["--mode", "bridge", "--bridge", "br7", "--guest-ip", "192.168.8.9/24"]
    refused(host, 3, "up", "b1", *adopt, "--bridge-address", "192.168.8.2/24", says="contradicts")
    host.fireroute("up", "b1", *adopt, "--bridge-address", "192.168.8.1/24")  # its own: fine
    # without --bridge-address the bridge's own address is the guests' prefix and gateway
    ranged = ["up", "b2", "--mode", "bridge", "--bridge", "br7", "--range"]
    ranged.append("192.168.8.20-192.168.8.30")
    rec = json.loads(host.fireroute(*ranged, "--json").stdout)[0]
    assert (rec["guest_ip"], rec["tap_ip"], rec["prefix"]) == ("192.168.8.20", "192.168.8.1", 24)
    assert host.fireroute(*ranged).returncode == 0  # the same again: a no-op
    rec = json.loads(
        host.fireroute(
            "up",
            "n1",
            "--dns",
            "9.9.9.9",
            "--dns",
            "9.9.9.9",
            "--allow-host-port",
            "53/udp",
            "--allow-host-port",
            "53/udp",
            "--json",
        ).stdout
    )[0]
    assert rec["dns"] == ["9.9.9.9"]
    assert host.set_elements("firecracker", "host_ports") == [
        {"concat": [rec["host_dev"], "udp", 53]}
    ]
    host.fireroute("teardown")
    assert "br7" in host.links()  # adopted, never removed
