"""A clone with IPv6 (issue 24 step 14): ``check`` after ``up`` is clean; each IPv6 object up
made for it, in its namespace or on the host, deleted or changed behind fireroute's back, is
named by ``check`` (exit 1) under that clone; ``restore`` (its dry run printing exactly what it
then runs) puts it back, after which ``check`` is clean again and a second ``restore`` has
nothing to do. The IPv4 objects of a clone: tests/kernel/test_drift.py."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Host
from tests.kernel.test_drift import report, restore_heals
from tests.kernel.test_drift_v6 import lines

pytestmark = pytest.mark.privileged

IN_NS = "ip netns exec NS"
T6 = "ip6 firecracker"
KERNELS = "fe80::8c2e:5ff:fe1a:4b3c/64"
"""a link-local address as the kernel would make one (EUI-64), added here by hand"""
CASES = {
    "tap's gateway address deleted": (
        "ip -n NS addr del fe80::1/64 dev vmtap0",
        '"vmtap0" lacks address fe80::1/64',
    ),
    "clone address deleted": (
        "ip -n NS addr del CLONE/64 dev veth0",
        '"veth0" lacks address CLONE/64',
    ),
    "a link-local address beside the clone address": (
        f"ip -n NS addr add {KERNELS} dev veth0 nodad",
        f'"veth0" has address {KERNELS}, which no lease asks for',
    ),
    "IPv6 default route deleted": (
        "ip -n NS -6 route del ::/0",
        'namespace "NS" has no default route via fe80::1',
    ),
    "route to the guest deleted": (
        "ip -n NS -6 route del fd00:c10::/64",
        'namespace "NS" has no route fd00:c10::/64 dev vmtap0',
    ),
    "IPv6 forwarding off in the namespace": (
        f"{IN_NS} sysctl -qw net.ipv6.conf.all.forwarding=0",
        'IPv6 forwarding is off in namespace "NS"',
    ),
    "addr_gen_mode of the tap 0": (
        f"{IN_NS} sysctl -qw net/ipv6/conf/vmtap0/addr_gen_mode=0",
        'addr_gen_mode of tap "vmtap0" is 0, not 1',
    ),
    "addr_gen_mode of the veth end 0": (
        f"{IN_NS} sysctl -qw net/ipv6/conf/veth0/addr_gen_mode=0",
        'addr_gen_mode of tap "veth0" is 0, not 1',
    ),
    "NAT66 table deleted": (
        f"{IN_NS} nft delete table ip6 fireroute_clone",
        "nftables table ip6 fireroute_clone in NS is missing",
    ),
    "SNAT66 chain flushed": (
        f"{IN_NS} nft flush chain ip6 fireroute_clone postrouting",
        'chain postrouting of ip6 fireroute_clone in NS: lacks "ip6 saddr fd00:c10::/64',
    ),
    "DNAT66 chain flushed": (
        f"{IN_NS} nft flush chain ip6 fireroute_clone prerouting",
        'chain prerouting of ip6 fireroute_clone in NS: lacks "iifname "veth0" ip6 daddr CLONE',
    ),
    "host end's gateway address deleted": (
        "ip addr del fe80::1/64 dev fr-c",
        '"fr-c" lacks address fe80::1/64',
    ),
    "host route to the clone's /64 deleted": (
        "ip -6 route del BLOCK dev fr-c",
        "host route BLOCK dev fr-c is missing",
    ),
    "IPv6 off on the host end": (
        "sysctl -qw net/ipv6/conf/fr-c/disable_ipv6=1",
        'IPv6 is off on tap "fr-c"',
    ),
    "addr_gen_mode of the host end 0": (
        "sysctl -qw net/ipv6/conf/fr-c/addr_gen_mode=0",
        'addr_gen_mode of tap "fr-c" is 0, not 1',
    ),
    "element of vms deleted": (
        f'nft delete element {T6} vms {{ "fr-c" . PREFIX }}',
        'nft set ip6 firecracker/vms lacks "fr-c" . PREFIX',
    ),
    "element of masq deleted": (
        f'nft delete element {T6} masq {{ PREFIX . "up0" }}',
        'nft set ip6 firecracker/masq lacks PREFIX . "up0"',
    ),
    "element of taps deleted": (
        f'nft delete element {T6} taps {{ "fr-c" }}',
        'nft set ip6 firecracker/taps lacks "fr-c"',
    ),
}
"""(NS: the clone's namespace; BLOCK: its /64; PREFIX: the /64's first address, as elements
hold it; CLONE: the clone's address, the /64's ::2)"""


@pytest.mark.parametrize(("damage", "said"), list(CASES.values()), ids=list(CASES))
def test_check_names_each_ipv6_object_of_a_clone_and_restore_heals_it(
    host: Host, damage: str, said: str
):
    host.fireroute("up", "c", "--mode", "clone", "--ipv6")
    host.fireroute("up", "other", "--mode", "clone")
    (c,) = [v for v in json.loads(host.fireroute("ls", "--json").stdout) if v["name"] == "c"]
    block = c["ipv6"]["block"]
    prefix = block.split("/")[0]
    words = {"NS": c["netns"], "BLOCK": block, "PREFIX": prefix, "CLONE": f"{prefix}2"}

    def put(text: str) -> str:
        for k in ("NS", "BLOCK", "PREFIX", "CLONE"):
            text = text.replace(k, words[k])
        return text

    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean  # the positive control: up, then check is clean
    host.sh(put(damage))
    rc, found = report(host)
    assert rc == 1 and not found["ok"], found
    named = [x for x in lines(found) if put(said) in x]
    assert named and all(x in found["vms"]["c"] for x in named), found  # under the clone
    assert found["vms"]["other"] == [], found  # the clone without IPv6 has nothing to mend
    restore_heals(host, found, clean)
