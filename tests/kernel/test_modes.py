"""Bridge and clone modes against the real kernel (throwaway namespaces)."""

from __future__ import annotations

import json
import os

import pytest

from fireroute.want import bridge
from tests.conftest import Host, sh

pytestmark = pytest.mark.privileged

BR = ["--mode", "bridge", "--bridge-address", "192.168.1.7/24"]


def up(host: Host, *args: str) -> dict:
    return json.loads(host.fireroute("up", *args, "--json").stdout)[0]


def detail(host: Host, dev: str) -> dict:
    return json.loads(host.run("ip", "-d", "-j", "link", "show", "dev", dev).stdout)[0]


def test_bridge_created_owned_and_removed_with_last_vm(host: Host):
    a = up(host, "a", *BR, "--guest-ip", "192.168.1.169/24", "--gateway", "192.168.1.1")
    assert a["boot_args"] == "ip=192.168.1.169::192.168.1.7:255.255.255.0::eth0:off"
    assert a["mac"] == "06:00:C0:A8:01:A9"
    script = host.fireroute("show", "a", "--format", "guest-script").stdout.splitlines()
    assert script == [
        "ip addr add 192.168.1.169/24 dev eth0",
        "ip link set eth0 up",
        "ip route add 192.168.1.1 via 192.168.1.7 dev eth0",
        "ip route add default via 192.168.1.7 dev eth0",
    ]
    br = detail(host, "br0")
    assert br["linkinfo"]["info_kind"] == "bridge"
    assert host.addrs("br0") == ["192.168.1.7/24"]
    assert detail(host, "fr-a")["master"] == "br0"
    assert host.addrs("fr-a") == []  # an enslaved tap has no address of its own
    b = up(host, "b", *BR, "--range", "192.168.1.160-192.168.1.162")
    c = up(host, "c", *BR, "--range", "192.168.1.160-192.168.1.162")
    assert (b["guest_ip"], c["guest_ip"]) == ("192.168.1.160", "192.168.1.161")
    host.fireroute("down", "b")
    d = up(host, "d", *BR, "--range", "192.168.1.160-192.168.1.162")
    assert d["guest_ip"] == "192.168.1.160"  # freed address reused
    e = up(host, "e", *BR, "--range", "192.168.1.160-192.168.1.162")
    assert e["guest_ip"] == "192.168.1.162"
    p = host.fireroute("up", "f", *BR, "--range", "192.168.1.160-192.168.1.162", check=False)
    assert p.returncode != 0 and "exhausted" in p.stderr
    for vm in ("a", "c", "d"):
        host.fireroute("down", vm)
    assert "br0" in host.links()  # e is still on it
    host.fireroute("down", "e")
    assert "br0" not in host.links()  # ours, and empty: removed


def test_a_made_bridge_keeps_its_mac_as_ports_come_and_go(host: Host):
    """A bridge made without a MAC takes its lowest port's (the control, by hand); the one
    fireroute makes has a fixed MAC and keeps it when a port with a lower one joins and
    leaves (its guests' neighbour entries for the gateway stay right). A changed MAC is drift:
    check says it, restore writes it back."""
    host.run("ip", "link", "add", "brc", "type", "bridge")
    host.run("ip", "link", "add", "lowc", "address", "02:00:00:00:00:01", "type", "veth",
             "peer", "name", "lowc1")  # fmt: skip
    host.run("ip", "link", "set", "lowc", "master", "brc")
    assert detail(host, "brc")["address"] == "02:00:00:00:00:01"  # the kernel's way
    a = up(host, "a", *BR, "--guest-ip", "192.168.1.169/24")
    mac = detail(host, "br0")["address"]
    assert mac == bridge.mac(a["owner_tag"].split(":")[0], "br0").lower(), mac
    host.run("ip", "link", "add", "low", "address", "02:00:00:00:00:01", "type", "veth",
             "peer", "name", "low1")  # fmt: skip
    host.run("ip", "link", "set", "low", "master", "br0")
    up(host, "b", *BR, "--guest-ip", "192.168.1.170/24")
    assert detail(host, "br0")["address"] == mac
    host.run("ip", "link", "del", "low")
    host.fireroute("down", "a")
    assert detail(host, "br0")["address"] == mac
    assert host.fireroute("check").returncode == 0
    host.run("ip", "link", "set", "br0", "address", "02:00:00:00:00:09")
    report = host.fireroute("check", check=False)
    assert report.returncode == 1 and "br0" in report.stdout, report.stdout
    host.fireroute("restore")
    assert detail(host, "br0")["address"] == mac
    assert host.fireroute("check").returncode == 0


def test_adopted_bridge_never_readdressed_or_removed(host: Host):
    host.run("ip", "link", "add", "brx", "type", "bridge")
    host.run("ip", "addr", "add", "10.9.9.1/24", "dev", "brx")
    host.run("ip", "link", "set", "brx", "up")
    rec = up(
        host,
        "a",
        "--mode",
        "bridge",
        "--bridge",
        "brx",
        "--guest-ip",
        "10.9.9.50/24",
        "--gateway",
        "10.9.9.1",
    )
    assert rec["boot_args"] == "ip=10.9.9.50::10.9.9.1:255.255.255.0::eth0:off"
    ours = bridge.mac(rec["owner_tag"].split(":")[0], "brx").lower()
    assert detail(host, "brx")["address"] != ours  # not ours: its MAC is not set
    host.fireroute("down", "a")
    assert "brx" in host.links() and host.addrs("brx") == ["10.9.9.1/24"]


def test_bridge_masquerade_and_dhcp(host: Host):
    up(host, "m1", *BR, "--guest-ip", "192.168.1.20/24", "--masquerade")
    up(host, "m2", *BR, "--guest-ip", "192.168.1.21/24", "--masquerade")
    masq = host.set_elements("firecracker", "masq")
    assert {"concat": ["192.168.1.20", "up0"]} in masq
    assert host.set_elements("firecracker", "egress") == [{"concat": ["br0", "up0"]}]
    host.fireroute("down", "m1")
    assert host.set_elements("firecracker", "egress") == [{"concat": ["br0", "up0"]}]
    d = up(host, "dh", "--mode", "bridge", "--dhcp")
    assert d["guest_ip"] is None and d["boot_args"] == "ip=:::::eth0:dhcp"
    assert d["mac"].startswith("06:01:")
    host.fireroute("teardown")
    assert "br0" not in host.links() and "firecracker" not in host.nft_text()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--mode", "bridge"], "exactly one of"),
        (["--mode", "bridge", "--guest-ip", "10.0.0.5"], "prefix length"),
        (["--mode", "bridge", "--guest-ip", "10.0.0.5/24"], "--bridge-address or --gateway"),
        ([*BR, "--guest-ip", "10.0.0.5/24"], "not in the bridge's subnet"),
        ([*BR, "--range", "192.168.1.9-192.168.1.2"], "invalid --range"),
        (["--masquerade"], "only applies to --mode bridge"),
        (["--mode", "clone", "--guest-ip", "192.168.241.0/29"], "no room"),
        (["--mode", "warp"], "unknown mode"),
    ],
)
def test_mode_bad_input(host: Host, args, needle):
    p = host.fireroute("up", "x", *args, check=False)
    assert p.returncode != 0 and needle in p.stderr and p.stderr.count("\n") == 1
    assert not [n for n in host.links() if n.startswith(("fr-", "br"))]


def ns_path(name: str) -> str:
    return f"/var/run/netns/{name}"


def test_clones_share_tap_name_and_guest_ip(host: Host):
    c1 = up(host, "cl1", "--mode", "clone")
    c2 = up(host, "cl2", "--mode", "clone", "--clone-address", "172.31.0.9")
    for c in (c1, c2):
        assert c["tap"] == "vmtap0" and c["guest_ip"] == "192.168.241.2"
        assert c["boot_args"] == "ip=192.168.241.2::192.168.241.1:255.255.255.248::eth0:off"
        assert c["firecracker"]["host_dev_name"] == "vmtap0"
    assert c1["mac"] == c2["mac"]
    assert c1["clone_address"] == "10.200.0.2" and c2["clone_address"] == "172.31.0.9"
    assert c1["netns"] != c2["netns"]
    for c, veth in ((c1, "10.200.0.2/30"), (c2, "10.200.0.6/30")):
        ns = c["netns"]
        assert os.path.exists(ns_path(ns))
        inside = {
            link["ifname"]: link
            for link in json.loads(sh("ip", "-n", ns, "-j", "addr", "show").stdout)
        }
        assert [
            f"{a['local']}/{a['prefixlen']}"
            for a in inside["vmtap0"]["addr_info"]
            if a["family"] == "inet"
        ] == ["192.168.241.1/29"]
        assert [
            f"{a['local']}/{a['prefixlen']}"
            for a in inside["veth0"]["addr_info"]
            if a["family"] == "inet"
        ] == [veth]
        nat = sh("ip", "netns", "exec", ns, "nft", "list", "ruleset").stdout
        assert "snat to " + veth.split("/")[0] in nat
        assert "dnat to 192.168.241.2" in nat
        assert (
            sh("ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()
            == "1"
        )
    assert host.addrs("fr-cl1") == ["10.200.0.1/30"]
    assert "172.31.0.9 via 10.200.0.6 dev fr-cl2" in host.run("ip", "route").stdout
    assert {"concat": ["10.200.0.2", "up0"]} in host.set_elements("firecracker", "masq")
    jailer = host.fireroute("show", "cl1", "--format", "jailer").stdout
    assert f"--netns {ns_path(c1['netns'])}" in jailer
    host.fireroute("down", "cl1")
    assert not os.path.exists(ns_path(c1["netns"])) and "fr-cl1" not in host.links()
    assert os.path.exists(ns_path(c2["netns"]))
    host.fireroute("teardown")
    assert not os.path.exists(ns_path(c2["netns"]))
    assert "firecracker" not in host.nft_text() and host.forwarding() == "0"


def test_clone_failure_rolls_back_namespace(host: Host):
    p = host.fireroute(
        "up", "cf", "--mode", "clone", env={"FIREROUTE_FAULT": "fail@3"}, check=False
    )
    assert p.returncode != 0 and "injected" in p.stderr
    assert not [n for n in os.listdir("/var/run/netns") if n.endswith("-cf")]
    assert "fr-cf" not in host.links()
    assert host.fireroute("ls", "--json").stdout.strip() == "[]"
