"""A clone with IPv6 in want/ (issue 24 step 14, docs/ipv6-plan.md 1.11): the same guest
address in every clone, NAT66 in the namespace to the clone's own (its /64's ``::2``), the host
end of the veth as a NAT tap with IPv6; a clone without IPv6 is as before. Its plans up and down
through the manager on the fake kernel are a golden file."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Interface, IPv6Network

import pytest

from fireroute.errors import UsageError
from fireroute.model import Options, Vm
from fireroute.plan.steps import as_commands
from fireroute.render import guest, record
from fireroute.want import render
from fireroute.want.clone import clone
from fireroute.want.objects import FORWARD6_KEY, Addr, Link, Sysctl
from fireroute.want.tables import NftChain, NftTable
from tests.unit.test_plan import golden
from tests.unit.test_up_down_v6 import V6, host  # noqa: F401 (the fixture)

NS = "fireroute-5ca1ab1e-c"


def lease(ipv6: bool = True, ordinal: int = 5) -> Vm:
    block = IPv6Network(f"fd3c:9a1e:52b0:{ordinal:x}::/64")
    options = Options(mode="clone", ipv6=ipv6)
    vm = Vm("c", IPv4Network("10.200.0.4/30"), "fr-c", "m", "up0", options, "active",
            block if ipv6 else None)  # fmt: skip
    vm.owner = "5ca1ab1e"
    vm.netns_name = NS
    return vm


def texts(objs: list) -> list[str]:
    out = []
    for o in objs:
        if isinstance(o, NftChain):
            out.append(f"{o.family} {o.table} {o.name}: {'; '.join(o.rules)}")
        elif isinstance(o, NftTable):
            out.append(f"table {o.family} {o.name} in {o.ns}")
        else:
            out.append(
                f"{o.ns or 'root'}: {o.text('set' if o.kind in ('link', 'sysctl') else 'create')}"
            )
    return out


def test_a_clone_with_ipv6_has_the_ipv6_objects_of_the_plan():
    v4, v6 = clone(lease(False)), clone(lease())
    new = [o for o in v6 if o not in v4 or o.kind == "link"]
    assert texts(new) == [
        "root: link set dev fr-c group 4151 alias fireroute:5ca1ab1e:c addrgenmode none up",
        f"{NS}: link set dev lo up",
        f"{NS}: link set dev vmtap0 addrgenmode none up",
        f"{NS}: link set dev veth0 addrgenmode none up",
        f"{NS}: address add fe80::1/64 dev vmtap0 nodad",
        f"{NS}: address add fd3c:9a1e:52b0:5::2/64 dev veth0 nodad",
        f"{NS}: route add ::/0 via fe80::1 dev veth0",
        f"{NS}: route add fd00:c10::/64 dev vmtap0",
        f"{NS}: net.ipv6.conf.all.forwarding=1",
        f"{NS}: net/ipv6/conf/vmtap0/addr_gen_mode=1",
        f"{NS}: net/ipv6/conf/veth0/addr_gen_mode=1",
        f"table ip6 fireroute_clone in {NS}",
        'ip6 fireroute_clone postrouting: ip6 saddr fd00:c10::/64 oifname "veth0" snat to '
        "fd3c:9a1e:52b0:5::2",
        'ip6 fireroute_clone prerouting: iifname "veth0" ip6 daddr fd3c:9a1e:52b0:5::2 dnat to '
        "fd00:c10::2",
        'ip6 fireroute_clone forward: iifname "vmtap0" ip6 saddr != fd00:c10::/64 drop',
        "root: net/ipv6/conf/fr-c/disable_ipv6=0",
        "root: net/ipv6/conf/fr-c/addr_gen_mode=1",
        "root: address add fe80::1/64 dev fr-c nodad",
        "root: route add fd3c:9a1e:52b0:5::/64 dev fr-c",
    ]
    owners = {o.owner for o in new}
    assert owners == {"5ca1ab1e:c"} and {o.vm for o in new} == {"c"}
    assert not [o for o in v4 if o not in v6]  # every IPv4 object stays as it was


def test_a_clone_without_ipv6_is_as_before():
    """No address generation set, no IPv6 object: its objects are those of before."""
    objs = clone(lease(False))
    assert all(o.addrgen is None for o in objs if isinstance(o, Link))
    assert not [o for o in objs if isinstance(o, Addr) and ":" in o.cidr]
    assert not [o for o in objs if isinstance(o, NftTable) and o.family == "ip6"]
    assert not [o for o in objs if isinstance(o, Sysctl) and "ipv6" in o.path]


def test_every_clone_has_one_guest_address_and_its_own_clone_address():
    a, b = lease(ordinal=1), lease(ordinal=2)
    assert a.guest6 == b.guest6 == IPv6Interface("fd00:c10::2/64")
    snat = {c.rules[0] for c in clone(a) + clone(b) if isinstance(c, NftChain)
            and c.family == "ip6" and c.name == "postrouting"}  # fmt: skip
    assert {r.split()[-1] for r in snat} == {"fd3c:9a1e:52b0:1::2", "fd3c:9a1e:52b0:2::2"}
    nat = Vm("n", IPv4Network("172.16.0.0/30"), "fr-n", "m", "up0", Options(ipv6=True),
             "active", IPv6Network("fd3c:9a1e:52b0:1::/64"))  # fmt: skip
    assert nat.guest6 == IPv6Interface("fd3c:9a1e:52b0:1::2/64")  # (a NAT guest: its block's)


def test_the_guest_is_told_its_fixed_address():
    vm = lease()
    assert record.ipv6(vm) == {
        "address": "fd00:c10::2",
        "prefix": 64,
        "gateway": "fe80::1",
        "block": "fd3c:9a1e:52b0:5::/64",
    }
    script = guest.guest_script(vm).splitlines()
    assert "ip -6 addr add fd00:c10::2/64 dev eth0" in script
    assert "ip -6 route add default via fe80::1 dev eth0" in script


def test_ipv6_is_taken_for_clones_and_refused_for_dhcp_bridge_guests():
    Options(mode="clone", ipv6=True)  # (no longer refused)
    Options(mode="bridge", bridge_address="10.0.0.1/24", guest="10.0.0.5/24", ipv6=True)
    with pytest.raises(UsageError, match="needs a known guest address"):
        Options(mode="bridge", dhcp=True, ipv6=True)
    Options(mode="bridge", dhcp=True)  # the control: the bridge guest without IPv6


def test_the_host_side_of_a_clone_with_ipv6_is_shared_as_a_nat_taps():
    """The ip6 table, IPv6 forwarding and the clone's elements (its host end, its /64)."""
    want = render.desired([lease()], None, "5ca1ab1e")
    assert ("nft table", (None, "ip6", "firecracker")) in want
    assert ("forwarding", (None, FORWARD6_KEY)) in want
    elements = {k[1][3:] for k in want if k[0] == "nft element" and k[1][1] == "ip6"}
    assert ("vms", '"fr-c" . fd3c:9a1e:52b0:5::') in elements
    assert ("masq", 'fd3c:9a1e:52b0:5:: . "up0"') in elements


def _scenario(host) -> str:  # noqa: F811
    """Two clones with IPv6 up (the first makes the ip6 table), one down, then the last."""
    m, fake = host()
    out = []
    for name in ("c1", "c2"):
        res = m.up([name], Options(mode="clone", **V6))
        out.append(f"## up {name}\n{as_commands(res.plan)}")
    for name in ("c1", "c2"):
        _, plan = m.down([name])
        out.append(f"## down {name}\n{as_commands(plan)}")
    assert not [k for k in fake.objs if k[0] != "link" or k[1] != (None, "eth0")]
    return "".join(out)


def test_up_and_down_of_v6_clones_golden(host):  # noqa: F811
    golden("clone-ipv6.txt", _scenario(host))
