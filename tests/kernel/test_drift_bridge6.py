"""Bridge guests with IPv6 (issue 24 step 15) beside a v4-only one on the same bridge:
``check`` after ``up`` is clean; each object up made for their IPv6, deleted or changed behind
fireroute's back (the bridge's fe80::1, a guest's route onto the bridge, its elements of the
bridge table's ports6, addrs6 and targets6 and of the ip6 table's bridged and masq, the bridge
table's output chain and its prerouting rules, the ip6 table, IPv6 forwarding), is named by
``check`` (exit 1) once; ``restore`` puts it back, after which ``check`` is clean again and a
second ``restore`` has nothing to do. gc and teardown take the IPv6 side with them."""

from __future__ import annotations

import json
import sqlite3
from ipaddress import IPv6Address

import pytest

from tests.conftest import Host
from tests.kernel.test_drift import report
from tests.kernel.test_drift_v6 import forwarding6, lines

pytestmark = pytest.mark.privileged

BR = ["--mode", "bridge", "--bridge-address", "192.168.6.1/24"]
T6, TB = "ip6 firecracker", "bridge firecracker"
CASES = {
    "the bridge's gateway address deleted": (
        "ip addr del fe80::1/64 dev br0",
        '"br0" lacks address fe80::1/64',
    ),
    "a guest's route deleted": ("ip -6 route del BLOCK dev br0", "host route BLOCK dev br0"),
    "element of ports6 deleted": (
        f'nft delete element {TB} ports6 {{ "fr-a" }}',
        'nft set bridge firecracker/ports6 lacks "fr-a"',
    ),
    "element of addrs6 deleted": (
        f'nft delete element {TB} addrs6 {{ "fr-a" . PREFIX }}',
        'nft set bridge firecracker/addrs6 lacks "fr-a" . PREFIX',
    ),
    "element of targets6 deleted": (
        f'nft delete element {TB} targets6 {{ "fr-a" . RAW }}',
        'nft set bridge firecracker/targets6 lacks "fr-a" . RAW',
    ),
    "element of bridged deleted": (
        f'nft delete element {T6} bridged {{ "br0" . PREFIX }}',
        'nft set ip6 firecracker/bridged lacks "br0" . PREFIX',
    ),
    "element of masq deleted": (
        f'nft delete element {T6} masq {{ PREFIX . "up0" }}',
        'nft set ip6 firecracker/masq lacks PREFIX . "up0"',
    ),
    "the bridge table's output chain flushed": (
        f"nft flush chain {TB} output",
        "chain output of bridge firecracker: lacks",
    ),
    "the bridge table's prerouting chain flushed": (
        f"nft flush chain {TB} prerouting",
        "chain prerouting of bridge firecracker: lacks",
    ),
    "the ip6 table's bridge_in flushed": (
        f"nft flush chain {T6} bridge_in",
        "chain bridge_in of ip6 firecracker: lacks",
    ),
    "the ip6 table deleted": (f"nft delete table {T6}", 'nftables table "ip6 firecracker"'),
    "forwarding off": ("sysctl -qw net.ipv6.conf.all.forwarding=0", "IPv6 forwarding is off"),
}
"""(BLOCK: guest a's /64, PREFIX: its first address, RAW: its first 64 bits as a number, as
its elements hold them)"""
EACH = (CASES["the ip6 table deleted"][0], CASES["forwarding off"][0])


def up(host: Host) -> dict:
    host.fireroute("up", "a", *BR, "--guest-ip", "192.168.6.21/24", "--ipv6")
    host.fireroute("up", "b", *BR, "--guest-ip", "192.168.6.22/24", "--ipv6")
    host.fireroute("up", "four", *BR, "--guest-ip", "192.168.6.23/24")
    (a,) = [v for v in json.loads(host.fireroute("ls", "--json").stdout) if v["name"] == "a"]
    return a


@pytest.mark.parametrize(("damage", "said"), list(CASES.values()), ids=list(CASES))
def test_check_names_each_bridge_ipv6_object_and_restore_heals_it(
    host: Host, damage: str, said: str
):
    a = up(host)
    block = a["ipv6"]["block"]
    prefix = block.split("/")[0]
    raw = hex(int(IPv6Address(prefix)) >> 64)
    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean  # the positive control: up, then check is clean
    host.sh(damage.replace("BLOCK", block).replace("PREFIX", prefix).replace("RAW", raw))
    rc, found = report(host)
    assert rc == 1 and not found["ok"], found
    line = said.replace("BLOCK", block).replace("PREFIX", prefix).replace("RAW", raw)
    named = [x for x in lines(found) if line in x]
    # named once (what every VM with IPv6 needs: under each of the two)
    assert len(named) == (2 if damage in EACH else 1), (line, found)
    assert found["vms"]["four"] == [], found  # the v4-only guest has nothing to mend
    host.fireroute("restore")
    rc, healed = report(host)
    assert rc == 0 and healed == clean, healed
    again = host.fireroute("restore").stdout
    assert again.strip() == "restore: nothing to do", again


def test_gc_and_teardown_take_the_bridge_guests_ipv6_with_them(host: Host):
    """gc of a bridge guest with IPv6 whose lease is forgotten: its route and elements go,
    the bridge's fe80::1 and the ip6 table stay for the other; with the last one's lease
    forgotten they go too, and IPv6 forwarding is back; teardown leaves nothing."""
    was = forwarding6(host)
    a = up(host)
    db = sqlite3.connect(host.state)
    db.execute("DELETE FROM vms WHERE name = 'a'")
    db.commit()
    host.fireroute("gc")
    assert a["ipv6"]["block"] not in host.run("ip", "-6", "route").stdout
    assert "fe80::1/64" in host.run("ip", "-6", "addr", "show", "dev", "br0").stdout
    assert "table ip6 firecracker" in host.nft_text()
    assert report(host)[0] == 0
    db.execute("DELETE FROM vms WHERE name = 'b'")
    db.commit()
    db.close()
    host.fireroute("gc")
    assert "fe80::1/64" not in host.run("ip", "-6", "addr", "show", "dev", "br0").stdout
    assert "table ip6 firecracker" not in host.nft_text() and forwarding6(host) == was
    rc, found = report(host)
    assert rc == 0 and found["vms"] == {"four": []}, found
    host.fireroute("teardown")
    assert "firecracker" not in host.nft_text() and "br0" not in host.links()
