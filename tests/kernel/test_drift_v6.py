"""A NAT VM with IPv6 (issue 24 step 6) beside one without: ``check`` after ``up`` is clean; each
IPv6 object up made, deleted or changed behind fireroute's back (the tap's gateway address, the
route to its /64, IPv6 switched off on its tap, addr_gen_mode 0, a link-local address besides
fireroute's, an element of the ip6 table, a chain's rules, the table, IPv6 forwarding), is named
by ``check`` (exit 1) under that VM (a chain's rules under the ip6 table); ``restore`` puts back
exactly that, after which ``check`` is clean again and a second ``restore`` has nothing to do.
The same for the IPv6 side of an egress policy and a published port (step 11): their elements
in the ip6 table's lazy parts, and a chain of one."""

from __future__ import annotations

import json

import pytest

from fireroute.want.nft import shard
from tests.conftest import Host
from tests.kernel.test_drift import report

pytestmark = pytest.mark.privileged

T6 = "ip6 firecracker"
OWN = "fe80::8c2e:5ff:fe1a:4b3c/64"
"""a link-local address as the kernel makes one (EUI-64) when a tap with IPv6 gets carrier
before addr_gen_mode is 1 (tests/kernel/test_v6_facts.py); added here by hand"""
CASES = {
    "gateway address deleted": (
        "ip addr del GATEWAY dev fr-a",
        '"fr-a" lacks address GATEWAY (its guest\'s IPv6 gateway)',
    ),
    "route deleted": ("ip -6 route del BLOCK dev fr-a", "host route BLOCK dev fr-a is missing"),
    "ipv6 off on the tap": (
        "sysctl -qw net/ipv6/conf/fr-a/disable_ipv6=1",
        'IPv6 is off on tap "fr-a" (its guest has no IPv6)',
    ),
    "addr_gen_mode 0": (
        "sysctl -qw net/ipv6/conf/fr-a/addr_gen_mode=0",
        'addr_gen_mode of tap "fr-a" is 0, not 1',
    ),
    "a link-local address beside fireroute's": (
        f"ip addr add {OWN} dev fr-a nodad",
        f'tap "fr-a" has link-local address {OWN} beside its gateway',
    ),
    "element of taps deleted": (
        f'nft delete element {T6} taps {{ "fr-a" }}',
        'nft set ip6 firecracker/taps lacks "fr-a"',
    ),
    "element of vms deleted": (
        f'nft delete element {T6} vms {{ "fr-a" . PREFIX }}',
        'nft set ip6 firecracker/vms lacks "fr-a" . PREFIX',
    ),
    "element of masq deleted": (
        f'nft delete element {T6} masq {{ PREFIX . "up0" }}',
        'nft set ip6 firecracker/masq lacks PREFIX . "up0"',
    ),
    "forward chain flushed": (
        f"nft flush chain {T6} forward",
        "chain forward of ip6 firecracker: lacks",
    ),
    "table deleted": (f"nft delete table {T6}", 'nftables table "ip6 firecracker" is missing'),
    "forwarding off": ("sysctl -qw net.ipv6.conf.all.forwarding=0", "IPv6 forwarding is off"),
}
"""(BLOCK: the VM's /64, PREFIX: its first address, as its elements hold it; GATEWAY: its
gateway on the tap, as ``ip address`` prints it)"""


def lines(found: dict) -> list[str]:
    return [line for ls in (*found["vms"].values(), *found["shared"].values()) for line in ls]


@pytest.mark.parametrize(("damage", "said"), list(CASES.values()), ids=list(CASES))
def test_check_names_each_ipv6_object_and_restore_heals_it(host: Host, damage: str, said: str):
    host.fireroute("up", "a", "--ipv6")
    host.fireroute("up", "other")
    (a,) = [v for v in json.loads(host.fireroute("ls", "--json").stdout) if v["name"] == "a"]
    block = a["ipv6"]["block"]
    prefix = block.split("/")[0]
    gateway = f"{a['ipv6']['gateway']}/64"

    def placed(text: str) -> str:
        return text.replace("BLOCK", block).replace("PREFIX", prefix).replace("GATEWAY", gateway)

    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean  # the positive control: up, then check is clean
    assert "nftables table ip6 firecracker" in clean["shared"]
    host.sh(placed(damage))
    rc, found = report(host)
    assert rc == 1 and not found["ok"], found
    line = placed(said)
    named = [x for x in lines(found) if line in x]
    assert len(named) == 1, found  # named, once
    assert found["vms"]["other"] == [], found  # the VM without IPv6 has nothing to mend
    host.fireroute("restore")
    rc, healed = report(host)
    assert rc == 0 and healed == clean, healed
    again = host.fireroute("restore").stdout
    assert again.strip() == "restore: nothing to do", again


def forwarding6(host: Host) -> str:
    return host.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip()


def test_gc_and_teardown_take_the_ipv6_side_with_them(host: Host):
    """gc of a VM with IPv6 whose lease is forgotten (one without stays): its tap, its ip6
    elements, the ip6 table and IPv6 forwarding (back to what it was) go, the other VM and
    IPv4 forwarding stay; then teardown of a second VM with IPv6 leaves no IPv6 either."""
    import sqlite3

    was = forwarding6(host)
    assert was == "0"  # (the sandbox's: fireroute switches it on)
    host.fireroute("up", "keep")
    host.fireroute("up", "lost", "--ipv6")
    assert forwarding6(host) == "1" and "table ip6 firecracker" in host.nft_text()
    db = sqlite3.connect(host.state)
    db.execute("DELETE FROM vms WHERE name = 'lost'")
    db.commit()
    db.close()
    host.fireroute("gc")
    assert "fr-lost" not in host.links() and "fr-keep" in host.links()
    assert "table ip6 firecracker" not in host.nft_text()
    assert forwarding6(host) == was and host.forwarding() == "1"
    rc, found = report(host)
    assert rc == 0 and found["vms"] == {"keep": []}, found
    host.fireroute("up", "six", "--ipv6")
    assert forwarding6(host) == "1" and "table ip6 firecracker" in host.nft_text()
    host.fireroute("teardown")
    assert not [n for n in host.links() if n.startswith("fr-")]
    assert "firecracker" not in host.nft_text()
    assert forwarding6(host) == was


def link_locals(host: Host, dev: str) -> set[str]:
    doc = json.loads(host.run("ip", "-j", "-6", "addr", "show", "dev", dev).stdout)
    return {f"{a['local']}/{a['prefixlen']}" for d in doc for a in d.get("addr_info", [])}


def test_the_kernels_link_local_on_a_tap_with_carrier_is_named_and_restore_deletes_it(
    host: Host,
):
    """A VMM attached (a process holding the tap: carrier) to the tap of a VM with IPv6: with
    addr_gen_mode 1 the tap keeps its gateway alone and check is clean (the control); with it
    switched to 0 behind fireroute's back the kernel adds its EUI-64 link-local address,
    check names both, restore sets the mode and deletes the address (the mode alone would
    leave it: tests/kernel/test_v6_facts.py), and a second restore has nothing to do."""
    import subprocess
    import sys

    from tests.kernel.test_v6_facts import HOLD, wait_for

    host.fireroute("up", "a", "--ipv6")
    (a,) = json.loads(host.fireroute("ls", "--json").stdout)
    gateway = f"{a['ipv6']['gateway']}/64"
    vmm = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", HOLD, "fr-a"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert vmm.stdout is not None and vmm.stdout.readline().strip() == "ready"
        rc, clean = report(host)
        assert rc == 0 and link_locals(host, "fr-a") == {gateway}, clean
        host.run("sysctl", "-qw", "net/ipv6/conf/fr-a/addr_gen_mode=0")
        assert wait_for(lambda: len(link_locals(host, "fr-a")) == 2), link_locals(host, "fr-a")
        (own,) = link_locals(host, "fr-a") - {gateway}
        rc, found = report(host)
        assert rc == 1 and found["vms"]["a"] == [
            'addr_gen_mode of tap "fr-a" is 0, not 1 (the kernel would give it a link-local '
            "address of its own)",
            f'tap "fr-a" has link-local address {own} beside its gateway, which no lease '
            "asks for (the kernel adds one when carrier comes before addr_gen_mode is 1)",
        ], found
        host.fireroute("restore")
        assert link_locals(host, "fr-a") == {gateway}
        assert report(host) == (0, clean)
        again = host.fireroute("restore").stdout
        assert again.strip() == "restore: nothing to do", again
    finally:
        vmm.communicate("")


K = shard("fr-a")
POLICY_CASES = {
    "a denied v6 destination deleted": (
        f'nft delete element {T6} out_deny_{K} {{ "fr-a" . 2000::/16 }}',
        f'nft set ip6 firecracker/out_deny_{K} lacks "fr-a" . 2000::/16',
    ),
    "an allowed v6 destination deleted": (
        f'nft delete element {T6} out_allow_{K} {{ "fr-a" . 2000:1::/32 }}',
        f'nft set ip6 firecracker/out_allow_{K} lacks "fr-a" . 2000:1::/32',
    ),
    "the v6 policy jump deleted": (
        f'nft delete element {T6} out_jump {{ "fr-a" }}',
        f'nft set ip6 firecracker/out_jump lacks "fr-a" : jump out_{K}',
    ),
    "a v6 published port deleted": (
        f"nft delete element {T6} pub_any {{ tcp . 8080 }}",
        'nft set ip6 firecracker/pub_any lacks "tcp" . 8080 : GUEST . 80',
    ),
    "the v6 policy chain flushed": (
        f"nft flush chain {T6} out_{K}",
        f"chain out_{K} of ip6 firecracker: lacks",
    ),
}
"""The IPv6 side of an egress policy and a published port (issue 24 step 11): elements of the
ip6 table's lazy parts, and a chain of one (GUEST: the VM's IPv6 address)"""


@pytest.mark.parametrize(("damage", "said"), list(POLICY_CASES.values()), ids=list(POLICY_CASES))
def test_check_names_the_v6_policy_and_ports_and_restore_heals_them(
    host: Host, damage: str, said: str
):
    host.fireroute("up", "a", "--ipv6", "--deny-out", "2000::/16", "--allow-out",
                   "2000:1::/32", "--publish", "8080:80")  # fmt: skip
    host.fireroute("up", "other", "--deny-out", "10.0.0.0/8")
    (a,) = [v for v in json.loads(host.fireroute("ls", "--json").stdout) if v["name"] == "a"]
    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean  # the positive control
    host.sh(damage)
    rc, found = report(host)
    assert rc == 1 and not found["ok"], found
    line = said.replace("GUEST", a["ipv6"]["address"])
    assert len([x for x in lines(found) if line in x]) == 1, found
    assert found["vms"]["other"] == [], found
    host.fireroute("restore")
    assert report(host) == (0, clean)
    again = host.fireroute("restore").stdout
    assert again.strip() == "restore: nothing to do", again


def test_gc_and_teardown_take_a_v6_vms_policy_and_ports(host: Host):
    """gc of a forgotten VM with an IPv6 policy and ports takes its elements of the ip6
    table's lazy parts (another VM's stay, and check is clean for it); teardown the rest."""
    import sqlite3

    policy = ["--deny-out", "2000::/16", "--allow-out", "2000:1::/32", "--egress", "public"]
    host.fireroute("up", "keep", "--ipv6", *policy, "--publish", "8080:80")
    host.fireroute("up", "lost", "--ipv6", *policy, "--publish", "9090:90")
    six = host.run("nft", "list", "table", "ip6", "firecracker").stdout
    assert ":lost" in six and "9090" in six and ":keep" in six  # (the control: there)
    db = sqlite3.connect(host.state)
    db.execute("DELETE FROM vms WHERE name = 'lost'")
    db.commit()
    db.close()
    host.fireroute("gc")
    six = host.run("nft", "list", "table", "ip6", "firecracker").stdout
    assert ":lost" not in six and "9090" not in six, six
    assert '"fr-keep" . 2000::/16' in six and "8080" in six  # keep's stay
    rc, found = report(host)
    assert rc == 0 and found["vms"] == {"keep": []}, found
    host.fireroute("teardown")
    assert "firecracker" not in host.nft_text()
