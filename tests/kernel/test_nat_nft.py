"""The real CLI in a throwaway "host" namespace; assertions on what the kernel then holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


def up(host: Host, *args: str) -> dict:
    return json.loads(host.fireroute("up", *args, "--json").stdout)[0]


def test_one_vm_up_and_down(host: Host):
    rec = up(host, "web-1")
    assert rec["tap"] == "fr-web-1"
    assert (rec["tap_ip"], rec["guest_ip"], rec["mac"]) == (
        "172.16.0.1",
        "172.16.0.2",
        "06:00:AC:10:00:02",
    )
    assert rec["uplink"] == "up0"
    assert rec["boot_args"] == "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"

    link = host.links()["fr-web-1"]
    assert host.addrs("fr-web-1") == ["172.16.0.1/30"]
    assert "UP" in link["flags"]
    detail = json.loads(host.run("ip", "-d", "-j", "link", "show", "dev", "fr-web-1").stdout)[0]
    assert detail["linkinfo"]["info_data"]["type"] == "tap"
    assert detail["linkinfo"]["info_data"]["multi_queue"] is False
    assert detail["ifalias"] == "fireroute:" + rec["owner_tag"]
    assert rec["owner_tag"].endswith(":web-1")
    assert detail["linkinfo"]["info_data"]["user"] == "root"  # nobody else may attach to it
    assert host.forwarding() == "1"
    assert host.run("cat", "/proc/sys/net/ipv6/conf/fr-web-1/disable_ipv6").stdout.strip() == "1"
    assert not [a for a in link.get("addr_info", []) if a.get("family") == "inet6"]

    assert host.set_elements("firecracker", "masq") == [{"concat": ["172.16.0.2", "up0"]}]
    assert host.set_elements("firecracker", "taps") == ["fr-web-1"]
    assert host.set_elements("firecracker", "vms") == [{"concat": ["fr-web-1", "172.16.0.2"]}]
    text = host.nft_text()
    assert "masquerade" in text and "ct state established,related accept" in text
    assert "hook postrouting priority srcnat" in text and "hook forward priority filter" in text

    host.fireroute("down", "web-1")
    assert "fr-web-1" not in host.links()
    assert host.nft() == [item for item in host.nft() if "metainfo" in item]  # nothing left
    assert host.forwarding() == "0"
    # idempotent
    p = host.fireroute("down", "web-1")
    assert "nothing to do" in p.stdout


def chains(host: Host) -> dict:
    """The NAT table's chains and rules, as listed (counter values left out)."""
    from fireroute.repair import parse_chains

    return parse_chains(host.run("nft", "list", "table", "ip", "firecracker").stdout)


def test_three_vms_sets_and_freed_block_reused(host: Host):
    recs = [up(host, "vm0")]
    one_vm = chains(host)  # the rules with one VM ...
    recs += [up(host, f"vm{i}") for i in range(1, 3)]
    assert chains(host) == one_vm  # ... are the rules with three: later VMs only add elements
    assert [r["guest_ip"] for r in recs] == ["172.16.0.2", "172.16.0.6", "172.16.0.10"]
    assert sorted(host.set_elements("firecracker", "taps")) == ["fr-vm0", "fr-vm1", "fr-vm2"]
    host.fireroute("down", "vm1")
    assert sorted(host.set_elements("firecracker", "taps")) == ["fr-vm0", "fr-vm2"]
    assert host.forwarding() == "1"  # other guests still run
    again = up(host, "vm3")
    assert again["guest_ip"] == "172.16.0.6"  # the freed block first
    assert chains(host) == one_vm  # rules unchanged by a down and an up; only sets changed
    host.fireroute("teardown")
    assert not [n for n in host.links() if n.startswith("fr-")]
    assert "firecracker" not in host.nft_text()
    assert host.forwarding() == "0"


def test_up_again_is_noop_and_different_options_refused(host: Host):
    first = host.fireroute("up", "a").stdout
    assert host.fireroute("up", "a").stdout == first
    p = host.fireroute("up", "a", "--dns", "10.0.0.53", check=False)
    assert p.returncode != 0 and "other options" in p.stderr
    assert p.stderr.count("\n") == 1


def test_forwarding_left_on_when_it_was_on(host: Host):
    host.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    up(host, "a")
    host.fireroute("down", "a")
    assert host.forwarding() == "1"


def test_failure_mid_up_leaves_nothing(host: Host):
    up(host, "keep")
    before_nft = host.set_elements("firecracker", "taps")
    # (forwarding is on already: 1 = tap batch, 2 = its sysctls, 3 = the nft transaction)
    p = host.fireroute("up", "doomed", env={"FIREROUTE_FAULT": "fail@3"}, check=False)
    assert p.returncode != 0 and "injected fault" in p.stderr
    assert "fr-doomed" not in host.links()
    assert host.set_elements("firecracker", "taps") == before_nft
    ls = json.loads(host.fireroute("ls", "--json").stdout)
    assert [v["name"] for v in ls] == ["keep"]


def test_natural_failure_in_batch_rolls_back_created_taps(host: Host):
    # a foreign link already holds the name the 4th VM's tap would get
    host.run("ip", "link", "add", "fr-b3", "type", "veth", "peer", "name", "foreign1")
    p = host.fireroute("up", "--count", "5", "--prefix", "b", check=False)
    assert p.returncode != 0
    assert 'tap "fr-b3"' in p.stderr
    names = set(host.links())
    assert not {"fr-b0", "fr-b1", "fr-b2", "fr-b4"} & names
    assert "fr-b3" in names and "foreign1" in names  # not ours: untouched
    v6 = host.run("cat", "/proc/sys/net/ipv6/conf/fr-b3/disable_ipv6").stdout.strip()
    assert v6 == "0"  # not even the IPv6 switch fireroute flips on its own taps
    assert host.fireroute("ls", "--json").stdout.strip() == "[]"
    assert host.forwarding() == "0"


def test_batch_up_and_down_all(host: Host):
    p = host.fireroute("up", "--count", "50", "--prefix", "vm-")
    assert "50 vms up" in p.stdout
    taps = [n for n in host.links() if n.startswith("fr-vm-")]
    assert len(taps) == 50
    assert len(host.set_elements("firecracker", "masq")) == 50
    host.fireroute("down", "--all")
    assert not [n for n in host.links() if n.startswith("fr-")]
    assert "firecracker" not in host.nft_text()


def test_host_route_conflict_refused_then_skipped(host: Host):
    host.run("ip", "addr", "add", "172.16.0.1/30", "dev", "up0")
    p = host.fireroute("up", "a", check=False)
    assert p.returncode == 3
    assert "172.16.0.0/30" in p.stderr and "--skip-conflicts" in p.stderr
    assert "fr-a" not in host.links()
    rec = up(host, "a", "--skip-conflicts")
    assert rec["guest_ip"] == "172.16.0.6"


def test_foreign_table_with_our_name_is_not_touched(host: Host):
    host.run("nft", "add", "table", "ip", "firecracker")
    host.run("nft", "add chain ip firecracker filter { type filter hook forward priority 0; }")
    before = host.nft_text()
    p = host.fireroute("up", "a", check=False)
    assert p.returncode != 0 and "not created by fireroute" in p.stderr
    assert host.nft_text() == before
    assert "fr-a" not in host.links()
    rec = up(host, "a", "--table", "fr_nat")
    assert rec["table"] == "fr_nat"
    host.fireroute("teardown")
    assert host.nft_text() == before


def test_concurrent_ups_get_distinct_blocks(host: Host):
    procs = [
        subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host.ns,
                sys.executable,
                "-m",
                "fireroute",
                "up",
                f"p{i}",
                "--state",
                str(host.state),
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(16)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    ips = [json.loads(o[0])[0]["guest_ip"] for o in outs]
    assert len(set(ips)) == 16
    assert len(host.set_elements("firecracker", "vms")) == 16
    assert len([n for n in host.links() if n.startswith("fr-p")]) == 16
