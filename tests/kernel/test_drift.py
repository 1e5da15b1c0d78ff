"""``check`` after ``up`` is clean; after any single object that up created is deleted or
changed behind fireroute's back, ``check`` says so (exit 1); ``restore`` puts back exactly that,
after which ``check`` is clean again and a second ``restore`` has nothing to do."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Host
from tests.kernel.test_repair import MODE_ARGS

pytestmark = pytest.mark.privileged

T = "ip firecracker"
NS = "$(cat netns)"  # this test's clone namespace (other runs on the machine may have theirs)
ALLOW = ["--allow-peers", "--allow-metadata", "--allow-host-port", "53/udp"]
SETUP = {
    "nat": [["up", "a", *ALLOW], ["up", "other"]],
    "iptables": [["up", "a", "--backend", "iptables"], ["up", "other", "--backend", "iptables"]],
    "clone": [["up", "c", *MODE_ARGS["clone"]]],
    "bridge": [["up", "b", *MODE_ARGS["bridge"]]],
}
CASES = {
    "nat": {
        "tap deleted": "ip link del fr-a",
        "address flushed": "ip addr flush dev fr-a",
        "tap down": "ip link set fr-a down",
        "alias changed": "ip link set fr-a alias someone-else",
        "ipv6 on": "sysctl -qw net/ipv6/conf/fr-a/disable_ipv6=0",
        "tap unowned": "ip link del fr-a && ip tuntap add dev fr-a mode tap && "
        "ip addr add 172.16.0.1/30 dev fr-a && ip link set fr-a group 4151 "
        "alias $(cat alias) up && sysctl -qw net/ipv6/conf/fr-a/disable_ipv6=1",
        "forwarding off": "sysctl -qw net.ipv4.ip_forward=0",
        "table flushed": f"nft flush table {T}",
        "table deleted": f"nft delete table {T}",
        "forward chain flushed": f"nft flush chain {T} forward",
        "guest_in chain flushed": f"nft flush chain {T} guest_in",
        "chain deleted": f"nft flush chain {T} input && nft delete chain {T} input",
        "policy drop": f"nft 'add chain {T} postrouting {{ policy drop; }}'",
        "foreign rule in our chain": f"nft insert rule {T} forward accept",
        "foreign chain in our table": f"nft 'add chain {T} evil "
        "{ type filter hook forward priority -5; policy drop; }'",
        **{
            f"element of {s} deleted": f"nft delete element {T} {s} {{ {e} }}"
            for s, e in {
                "masq": '172.16.0.2 . "up0"',
                "egress": '"fr-a" . "up0"',
                "taps": '"fr-a"',
                "vms": '"fr-a" . 172.16.0.2',
                "peers": '"fr-a"',
                "metadata": '"fr-a"',
                "host_ports": '"fr-a" . udp . 53',
            }.items()
        },
    },
    "clone": {
        "namespace deleted": f"ip netns del {NS}",
        "host veth deleted": "ip link del fr-c",
        "tap in namespace deleted": f"ip -n {NS} link del vmtap0",
        "tap in namespace down": f"ip -n {NS} link set vmtap0 down",
        "namespace ruleset flushed": f"ip netns exec {NS} nft flush ruleset",
        "namespace dnat rule flushed": f"ip netns exec {NS} nft flush chain ip fireroute_clone "
        "prerouting",
        "namespace forwarding off": f"ip netns exec {NS} sysctl -qw net.ipv4.ip_forward=0",
        "namespace default route deleted": f"ip -n {NS} route del default",
        "host route to the clone address deleted": "ip route del 172.31.9.9/32",
        "masq element deleted": f'nft delete element {T} masq {{ 10.200.0.2 . "up0" }}',
    },
    "bridge": {
        "tap detached": "ip link set fr-b nomaster",
        "tap deleted": "ip link del fr-b",
        "bridge deleted": "ip link del br0",
        "bridge egress element deleted": f'nft delete element {T} egress {{ "br0" . "up0" }}',
        "masq element deleted": f'nft delete element {T} masq {{ 192.168.6.20 . "up0" }}',
        "table flushed": f"nft flush table {T}",
        "anti-spoofing table flushed": "nft flush table bridge firecracker",
        "anti-spoofing table deleted": "nft delete table bridge firecracker",
        "anti-spoofing rule removed": "nft flush chain bridge firecracker prerouting",
        "anti-spoofing policy drop": "nft 'add chain bridge firecracker prerouting "
        "{ policy drop; }'",
        "mac element deleted": "nft delete element bridge firecracker macs "
        '{ "fr-b" . 06:00:c0:a8:06:14 }',
        "address element deleted": "nft delete element bridge firecracker addrs "
        '{ "fr-b" . 192.168.6.20 }',
    },
}


def restore_heals(host: Host, found: dict, clean: dict) -> None:
    """``restore --dry-run`` changes nothing (check still finds ``found``) and prints what
    ``restore`` then runs; after it check is ``clean`` again and a second restore has nothing
    to do."""
    planned = host.fireroute("restore", "--dry-run").stdout
    assert report(host) == (1, found)  # the dry run changed nothing
    ran = json.loads(host.fireroute("restore", "--json").stdout)["commands"]
    assert ran == planned  # and printed exactly what restore then ran
    rc, healed = report(host)
    assert rc == 0 and healed == clean, healed
    again = host.fireroute("restore").stdout
    assert again.strip() == "restore: nothing to do", again


def report(host: Host) -> tuple[int, dict]:
    p = host.fireroute("check", "--json", check=False)
    return p.returncode, json.loads(p.stdout)


def cases():
    for mode, by_name in CASES.items():
        for name, cmd in by_name.items():
            yield pytest.param(mode, cmd, id=f"{mode}: {name}")
    for n in range(12):  # each of a VM's iptables rules, and the shared one
        yield pytest.param("iptables", n, id=f"iptables: rule {n} deleted")


@pytest.mark.parametrize(("mode", "damage"), list(cases()))
def test_check_sees_each_object_and_restore_heals_it(host: Host, mode: str, damage):
    for args in SETUP[mode]:
        host.fireroute(*args)
    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean  # the positive control: up, then check is clean
    if isinstance(damage, int):
        rules = sorted(r for r in host.iptables_rules() if "fireroute" in r and ":other" not in r)
        assert len(rules) == 12, rules
        rule = rules[damage]
        table = {"POSTROUTING": "nat", "PREROUTING": "raw"}.get(rule.split()[1], "filter")
        host.run("sh", "-c", f"iptables-nft -t {table} {rule.replace('-A', '-D', 1)}")
    else:
        alias = host.links().get("fr-a", {}).get("ifalias", "")
        (host.state.parent / "alias").write_text(alias)
        vms = json.loads(host.fireroute("ls", "--json").stdout)
        clone_ns = next((v["netns"] for v in vms if "netns" in v), "")
        (host.state.parent / "netns").write_text(clone_ns)
        host.sh(f"cd {host.state.parent} && {damage}")
        if "netns del" in damage:  # (the kernel destroys it, and its veths, after ip returns)
            deadline = time.monotonic() + 20
            while "fr-c" in host.links():
                assert time.monotonic() < deadline, "fr-c outlived its namespace"
                time.sleep(0.05)
    rc, found = report(host)
    assert rc == 1 and not found["ok"], found
    restore_heals(host, found, clean)


def test_uplink_gone_is_reported(host: Host):
    host.fireroute("up", "a")
    host.run("ip", "link", "set", "up0", "down")
    host.run("ip", "link", "set", "up0", "name", "up9")
    rc, found = report(host)
    assert rc == 1 and any('uplink "up0" is missing' in p for p in found["vms"]["a"]), found
    host.run("ip", "link", "set", "up9", "name", "up0")
    host.run("ip", "link", "set", "up0", "up")
    host.run("ip", "route", "replace", "default", "via", "203.0.113.1")
    assert report(host)[0] == 0
