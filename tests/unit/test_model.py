from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

import pytest

from fireroute import jsontext
from fireroute.errors import UsageError
from fireroute.model import (
    Options,
    Owner,
    Published,
    Vm,
    check_ifname,
    check_mac,
    check_vm_name,
)


@pytest.mark.parametrize("name", ["web-1", "a", "A.b_c-9", "x" * 63])
def test_good_vm_names(name):
    assert check_vm_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "x" * 64, "a b", "a;rm -rf", "a/b", "é", "a\n"])
def test_bad_vm_names(name):
    with pytest.raises(UsageError, match="invalid vm name"):
        check_vm_name(name)


def test_tap_name_limits():
    assert check_ifname("tap0") == "tap0"
    with pytest.raises(UsageError, match="15"):
        check_ifname("x" * 16)
    with pytest.raises(UsageError, match="invalid tap name"):
        check_ifname("a b")
    # argv bytes that are not UTF-8 arrive as lone surrogates: a usage error, not a traceback
    for name in ("\udcff\udcfe", "x" * 14 + "\udcff"):
        with pytest.raises(UsageError):
            check_ifname(name)


def test_mac_checks():
    assert check_mac("06:00:ac:10:00:02") == "06:00:AC:10:00:02"
    with pytest.raises(UsageError, match="multicast"):
        check_mac("01:00:00:00:00:01")
    with pytest.raises(UsageError, match="invalid MAC"):
        check_mac("06:00:ac:10:00")


def test_options_validation():
    with pytest.raises(UsageError, match="block size"):
        Options(prefix=31)
    with pytest.raises(UsageError, match="block size"):
        Options(prefix=23)
    with pytest.raises(UsageError, match="smaller than one"):
        Options(pool=IPv4Network("10.0.0.0/31"), prefix=30)
    with pytest.raises(UsageError, match="backend"):
        Options(backend="pf")


def test_options_roundtrip():
    o = Options(owner=Owner.parse("1000:1001"), mac="06:00:00:00:00:01", tap="tap7")
    assert Options.from_identity(o.identity()) == o


@pytest.mark.parametrize("text", ["x", "1:y", "-1", "1:-2", ""])
def test_owner_bad(text):
    with pytest.raises(UsageError, match="--owner"):
        Owner.parse(text)


# -- dual stack (issue 24): ipv6 and pool6 in Options, net6 in Vm

V4_TEXT = (
    '{"mode": "nat", "backend": "nft", "pool": "172.16.0.0/16", "prefix": 30, "uplink": null, '
    '"table": "firecracker", "tap": null, "dns": ["192.0.2.53"], "owner": "1000:1001", '
    '"mac": null, "guest_iface": "eth0", "iface_id": "eth0", "bridge": null, '
    '"bridge_address": null, "guest": null, "addr_range": null, "dhcp": false, '
    '"gateway": null, "masquerade": false, "clone_address": null, "allow_peers": false, '
    '"allow_metadata": false, "allow_host_ports": [[22, "tcp"]], "fix_forward_policy": false, '
    '"egress": "public", "allow_out": [], "deny_out": ["10.0.0.0/8"], "host_nets": [], '
    '"netns": null, "container": null, "ifname": null, "network": null, "mtu": null, '
    '"publish": ["8080:80/tcp"]}'
)
"""a v4-only VM's options as the state file holds them, made before ipv6 existed"""
POOL6 = IPv6Network("fd3c:9a1e:52b0::/48")


def v4_options() -> Options:
    return Options(
        dns=(IPv4Address("192.0.2.53"),),
        owner=Owner.parse("1000:1001"),
        publish=(Published.parse("8080:80"),),
        allow_host_ports=((22, "tcp"),),
        egress="public",
        deny_out=(IPv4Network("10.0.0.0/8"),),
    )


def test_a_v4_only_vms_stored_text_is_unchanged():
    """Old and new files read alike: the text has no ipv6 key, and old text reads back."""
    o = v4_options()
    assert jsontext.dumps(o.identity()) == V4_TEXT
    old = Options.from_identity(jsontext.loads(V4_TEXT))
    assert old == o and old.ipv6 is False and old.pool6 is None


def test_a_v6_vms_text_holds_ipv6_and_pool6():
    o = Options(ipv6=True, pool6=POOL6)
    text = jsontext.dumps(o.identity())
    assert text.endswith('"publish": [], "ipv6": true, "pool6": "fd3c:9a1e:52b0::/48"}')
    back = Options.from_identity(jsontext.loads(text))
    assert back == o and back.pool6 == POOL6 and back != Options()
    default = Options(ipv6=True)  # the state file's pool
    assert Options.from_identity(default.identity()) == default
    assert default.identity()["pool6"] is None and default != o


def test_ipv6_needs_the_nft_backend():
    assert Options(ipv6=True).ipv6  # control: nft (the default)
    assert Options(backend="iptables").backend == "iptables"  # control: iptables without
    with pytest.raises(UsageError) as e:
        Options(ipv6=True, backend="iptables")
    assert str(e.value) == (
        "--ipv6 needs the nft backend: the iptables backend has no IPv6 rules; use --backend nft"
    )


def test_pool6_needs_ipv6():
    assert Options(ipv6=True, pool6=POOL6).pool6 == POOL6  # control
    with pytest.raises(UsageError, match="^--pool6 fd3c:9a1e:52b0::/48 needs --ipv6"):
        Options(pool6=POOL6)


def test_pool6_holds_a_block():
    assert Options(ipv6=True, pool6=IPv6Network("fd3c:9a1e:52b0:1::/64")).pool6  # control
    with pytest.raises(UsageError, match='"fd3c:9a1e:52b0:1::/80": a /80 is smaller'):
        Options(ipv6=True, pool6=IPv6Network("fd3c:9a1e:52b0:1::/80"))


def test_a_v6_lease_gives_the_guest_its_address_and_gateway():
    net6 = IPv6Network("fd3c:9a1e:52b0:1::/64")
    vm = Vm("a", IPv4Network("172.16.0.4/30"), "fr-a", "06:00:AC:10:00:06", "eth0",
            Options(ipv6=True), "active", net6)  # fmt: skip
    assert vm.net6 == net6
    assert vm.guest6 == IPv6Interface("fd3c:9a1e:52b0:1::2/64")
    assert vm.gateway6 == IPv6Address("fe80::1:9a1e:52b0:1")  # its own (the block's bits)
    assert vm.with_state("pending").net6 == net6  # a state change keeps the lease
    assert vm.with_state("pending").gateway6 == vm.gateway6
    vm.own_gateway6 = False  # a lease that predates gateways of their own keeps fe80::1
    assert vm.gateway6 == IPv6Address("fe80::1")
    assert vm.with_state("pending").gateway6 == IPv6Address("fe80::1")
    from fireroute.change import changed

    assert changed(vm, Options(ipv6=True, allow_metadata=True)).guest6 == vm.guest6
    assert changed(vm, Options(ipv6=True, allow_metadata=True)).gateway6 == vm.gateway6
    v4 = Vm("b", IPv4Network("172.16.0.8/30"), "fr-b", "06:00:AC:10:00:0A", "eth0", Options())
    assert (v4.net6, v4.guest6, v4.gateway6) == (None, None, None)
    assert v4.with_state("pending").net6 is None
