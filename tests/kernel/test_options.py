"""Non-default options as the kernel sees them, a broader host route as a conflict, and no
egress towards a host interface other than the uplink."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_isolation import Lab, lab  # noqa: F401 - the fixture

pytestmark = pytest.mark.privileged


def test_non_default_options_reach_the_kernel(host: Host):
    rec = json.loads(
        host.fireroute(
            "up",
            "w",
            "--block-size",
            "29",
            "--pool",
            "10.50.0.0/24",
            "--uplink",
            "up0",
            "--mac",
            "06:aa:bb:cc:dd:ee",
            "--tap",
            "tapw",
            "--guest-iface",
            "eth1",
            "--table",
            "fcx",
            "--json",
        ).stdout
    )[0]
    assert (rec["tap"], rec["tap_ip"], rec["guest_ip"], rec["prefix"]) == (
        "tapw",
        "10.50.0.1",
        "10.50.0.2",
        29,
    )
    assert host.addrs("tapw") == ["10.50.0.1/29"]
    assert rec["boot_args"] == "ip=10.50.0.2::10.50.0.1:255.255.255.248::eth1:off"
    assert rec["mac"] == "06:AA:BB:CC:DD:EE" and rec["firecracker"]["guest_mac"] == rec["mac"]
    assert host.set_elements("fcx", "vms") == [{"concat": ["tapw", "10.50.0.2"]}]
    assert host.set_elements("fcx", "masq") == [{"concat": ["10.50.0.2", "up0"]}]
    nxt = json.loads(
        host.fireroute(
            "up", "w2", "--block-size", "29", "--pool", "10.50.0.0/24", "--table", "fcx", "--json"
        ).stdout
    )[0]
    assert nxt["tap_ip"] == "10.50.0.9"  # the next /29
    host.fireroute("teardown")
    assert "fcx" not in host.nft_text()


def test_a_broader_host_route_over_the_pool_is_a_conflict(host: Host):
    host.run("ip", "route", "add", "172.16.0.0/12", "via", "203.0.113.1")
    p = host.fireroute("up", "a", check=False)
    assert p.returncode == 3 and "172.16.0.0/12" in p.stderr, p.stderr
    assert "fr-a" not in host.links()
    host.fireroute("up", "a", "--pool", "10.60.0.0/16")  # a pool outside it: accepted


def test_no_egress_towards_a_host_interface_other_than_the_uplink(lab: Lab):  # noqa: F811
    host = lab.host
    side = f"{host.ns}-s"
    sh("ip", "netns", "add", side)
    lab.guests.append(side)  # removed with the lab
    host.run("ip", "link", "add", "side0", "type", "veth", "peer", "name", "eth0", "netns", side)
    host.run("ip", "addr", "add", "198.51.100.1/24", "dev", "side0")
    host.run("ip", "link", "set", "side0", "up")
    sh("ip", "-n", side, "addr", "add", "198.51.100.2/24", "dev", "eth0")
    sh("ip", "-n", side, "link", "set", "eth0", "up")
    sh("ip", "-n", side, "route", "add", "172.16.0.0/16", "via", "198.51.100.1")
    lab.serve(side, "198.51.100.2:80")
    ns, _ = lab.guest("g")
    assert lab.connect(ns, "198.51.100.2", 80).startswith("FAIL")  # not the uplink: dropped
    assert lab.connect(ns, "203.0.113.1", 80) == "hello 203.0.113.2"  # the uplink: through
    assert lab.connect(host.ns, "198.51.100.2", 80) == "hello 198.51.100.1"  # it is reachable


def test_generated_tap_names_stay_unique_when_their_hashes_collide(host: Host):
    from tests.unit.test_addressing import colliding_names

    a, b = colliding_names()  # long names whose first generated tap names are equal
    taps = [json.loads(host.fireroute("up", n, "--json").stdout)[0]["tap"] for n in (a, b)]
    assert len(set(taps)) == 2 and all(t in host.links() for t in taps), taps
    assert host.fireroute("check").returncode == 0
