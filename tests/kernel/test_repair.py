"""check / gc / restore against the real kernel, and kill -9 at every step of up and down."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


def check(host: Host) -> tuple[int, dict]:
    p = host.fireroute("check", "--json", check=False)
    return p.returncode, json.loads(p.stdout)["vms"]


def snapshot(host: Host) -> tuple:
    links = {
        n: (host.addrs(n), host.links()[n]["address"]) for n in host.links() if n.startswith("fr-")
    }
    return (
        links,
        sorted(map(str, host.set_elements("firecracker", "vms"))),
        sorted(r for r in host.iptables_rules() if "fireroute" in r),
    )


def test_check_reports_drift(host: Host):
    host.fireroute("up", "a")
    host.fireroute("up", "b")
    assert check(host) == (0, {"a": [], "b": []})
    host.run("ip", "link", "del", "fr-a")
    host.run("nft", 'delete element ip firecracker masq { 172.16.0.6 . "up0" }')
    host.run("sysctl", "-qw", "net/ipv6/conf/fr-b/disable_ipv6=0")
    rc, report = check(host)
    assert rc == 1
    assert report["a"] == ['tap "fr-a" is missing']
    assert report["b"] == [
        'IPv6 is on for tap "fr-b" (guests could reach the host over it)',
        'nft set firecracker/masq lacks 172.16.0.6 . "up0"',
    ]
    host.fireroute("restore")
    assert check(host) == (0, {"a": [], "b": []})


def test_restore_after_reboot(host: Host):
    host.fireroute("up", "n1")
    host.fireroute("up", "n2", "--dns", "10.0.0.53")
    host.fireroute("up", "i1", "--backend", "iptables")
    before = snapshot(host)
    # a "reboot": taps, tables, rules and forwarding gone, state file kept
    for tap in ("fr-n1", "fr-n2", "fr-i1"):
        host.run("ip", "link", "del", tap)
    host.run("nft", "delete", "table", "ip", "firecracker")
    for rule in [r for r in host.iptables_rules() if "fireroute" in r]:
        table = {"POSTROUTING": "nat", "PREROUTING": "raw"}.get(rule.split()[1], "filter")
        host.run("sh", "-c", f"iptables-nft -t {table} {rule.replace('-A', '-D', 1)}")
    host.run("sysctl", "-qw", "net.ipv4.ip_forward=0")
    assert check(host)[0] == 1
    host.fireroute("restore")
    assert snapshot(host)[0].keys() == before[0].keys()
    assert {k: v[0] for k, v in snapshot(host)[0].items()} == {
        k: v[0] for k, v in before[0].items()
    }
    assert snapshot(host)[1:] == before[1:]
    assert check(host) == (0, {"n1": [], "n2": [], "i1": []})
    assert host.forwarding() == "1"
    host.fireroute("restore")  # idempotent
    assert check(host)[0] == 0


def test_gc_removes_only_untracked_tagged_objects(host: Host):
    host.fireroute("up", "keep")
    host.fireroute("up", "lost")
    host.fireroute("up", "lost2", "--backend", "iptables")
    # foreign objects that must survive
    host.run("ip", "link", "add", "fr-foreign", "type", "veth", "peer", "name", "other0")
    host.run("nft", "add table ip theirs")
    host.run("iptables-nft", "-A", "FORWARD", "-i", "docker0", "-j", "ACCEPT")
    foreign_rules = [r for r in host.iptables_rules() if "fireroute" not in r]
    # the state forgets two VMs (as if the file was restored from an old backup)
    import sqlite3

    db = sqlite3.connect(host.state)
    db.execute("DELETE FROM vms WHERE name IN ('lost', 'lost2')")
    db.commit()
    db.close()
    host.fireroute("gc")
    links = host.links()
    assert "fr-lost" not in links and "fr-lost2" not in links
    assert "fr-keep" in links and "fr-foreign" in links and "other0" in links
    assert host.set_elements("firecracker", "taps") == ["fr-keep"]
    assert [r for r in host.iptables_rules() if "fireroute" not in r] == foreign_rules
    assert not [r for r in host.iptables_rules() if "fireroute" in r]
    assert "table ip theirs" in host.nft_text()
    assert check(host) == (0, {"keep": []})


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_kill_during_up_then_gc(host: Host, k: int, backend: str):
    host.fireroute("up", "other", "--backend", backend)
    host.run("sysctl", "-qw", "net.ipv4.ip_forward=0")  # so up has a sysctl step too
    p = host.fireroute(
        "up", "v", "--backend", backend, env={"FIREROUTE_FAULT": f"kill@{k}"}, check=False
    )
    assert p.returncode == -9 or p.returncode == 137, p.stderr
    host.fireroute("gc")
    rc, report = check(host)
    # half-made VM fully absent; "other" is intact (forwarding, which this test switched off
    # itself, is restore's business, not gc's)
    assert "v" not in report, report
    assert [p for p in report["other"] if "forwarding" not in p] == [], report
    assert "fr-v" not in host.links()
    assert not [r for r in host.iptables_rules() if "fireroute:v " in r + " "]
    host.fireroute("up", "v", "--backend", backend)  # and it can come up again
    assert check(host)[0] == 0


@pytest.mark.parametrize("k", [1, 2])
def test_kill_during_down_then_gc(host: Host, k: int):
    host.fireroute("up", "a")
    host.fireroute("up", "b")
    p = host.fireroute("down", "a", env={"FIREROUTE_FAULT": f"kill@{k}"}, check=False)
    assert p.returncode in (-9, 137)
    host.fireroute("gc")
    assert check(host) == (0, {"b": []})
    assert "fr-a" not in host.links()
    assert sorted(host.set_elements("firecracker", "taps")) == ["fr-b"]


def test_restore_bridge_and_clone(host: Host):
    br = ["--mode", "bridge", "--bridge-address", "192.168.5.1/24"]
    host.fireroute("up", "b1", *br, "--guest-ip", "192.168.5.10/24")
    host.fireroute("up", "c1", "--mode", "clone")
    assert check(host) == (0, {"c1": [], "b1": []})
    host.run("ip", "link", "del", "br0")  # the tap stays, detached
    host.run("ip", "link", "del", "fr-c1")  # the clone's veth pair goes
    rc, report = check(host)
    assert rc == 1 and report["b1"] and report["c1"]
    host.fireroute("restore")
    assert check(host) == (0, {"c1": [], "b1": []})
    assert host.addrs("br0") == ["192.168.5.1/24"]
    host.fireroute("teardown")


MODE_ARGS = {
    "bridge": [
        "--mode",
        "bridge",
        "--bridge-address",
        "192.168.6.1/24",
        "--guest-ip",
        "192.168.6.20/24",
        "--masquerade",
    ],
    "clone": ["--mode", "clone", "--clone-address", "172.31.9.9"],
}


# The processes each up runs, counted by the fault hook: bridge: ip -batch (bridge, tap) and
# one nft (NAT elements and anti-spoofing table); clone: ip -batch (host side), ip -n
# (inside), the sysctl and nft inside the namespace, the clone-address route, nft on the host
LANDS = {"bridge": 2, "clone": 6}


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("mode", ["bridge", "clone"])
def test_kill_during_up_then_gc_other_modes(host: Host, k: int, mode: str):
    """SIGKILL after every process an up of this mode runs (k beyond the last one: the up
    simply completes); gc then leaves either the VM fully up or fully absent."""
    host.fireroute("up", "keep")
    p = host.fireroute(
        "up", "v", *MODE_ARGS[mode], env={"FIREROUTE_FAULT": f"kill@{k}"}, check=False
    )
    killed = p.returncode in (-9, 137)
    assert killed or p.returncode == 0, p.stderr
    assert killed == (k <= LANDS[mode]), (k, p.returncode)  # these kills land, later ones not
    host.fireroute("gc")
    rc, report = check(host)
    assert rc == 0, report
    if not killed:  # up finished: gc must leave the healthy VM exactly as it is
        assert set(report) == {"keep", "v"}, report
    else:  # killed half-way: gc undid it
        assert set(report) == {"keep"}, report
    if "v" not in report:  # fully absent: nothing of it left, and it can come up again
        links = host.links()
        assert "fr-v" not in links and "br0" not in links
        assert not clone_namespaces(host, "v")
        host.fireroute("up", "v", *MODE_ARGS[mode])
        assert check(host)[0] == 0
    assert bool(clone_namespaces(host, "v")) == (mode == "clone")  # the lookup finds it
    host.fireroute("teardown")
    assert not clone_namespaces(host, "v")


def clone_namespaces(host: Host, vm: str) -> list[str]:
    """The clone namespaces of ``vm`` of this test's state file (others' runs may share
    /var/run/netns)."""
    import sqlite3

    db = sqlite3.connect(f"file:{host.state}?mode=ro", uri=True)
    try:
        (instance,) = db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
    finally:
        db.close()
    name = f"fireroute-{instance}-{vm}"
    return [n for n in os.listdir("/var/run/netns") if n == name]
