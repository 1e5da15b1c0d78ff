"""One request model for every door: fields -> Options -> fields gives the same Options."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest

from fireroute import request, validate
from fireroute.errors import UsageError
from fireroute.model import Options, Vm

CASES = [
    {},
    {"backend": "iptables", "allow_host_ports": ["53/udp", "22/tcp"], "dns": ["192.0.2.53"]},
    {
        "mode": "bridge",
        "bridge_address": "192.168.5.1/24",
        "guest_ip": "192.168.5.9/24",
        "masquerade": True,
    },  # fmt: skip
    {"mode": "clone", "clone_address": "172.31.0.9", "pool": "10.250.0.0/16"},
    {"egress": "public", "allow_out": ["10.1.0.0/16", "10.1.2.0/24"], "deny_out": ["8.8.8.8/32"]},
    {"ipv6": True},
    {"ipv6": True, "pool6": "2001:db8:1:100::/56"},
]


@pytest.mark.parametrize("fields", CASES)
def test_fields_round_trip(fields):
    o = request.options(fields)
    assert request.options(request.fields_of(o)) == o


def test_overlapping_cidrs_are_merged_and_host_bits_refused():
    o = request.options({"allow_out": ["10.1.0.0/16", "10.1.2.0/24", "10.0.0.0/16"]})
    assert [str(n) for n in o.allow_out] == ["10.0.0.0/15"]  # merged: 10.0/16 + 10.1/16
    with pytest.raises(UsageError, match="host bits"):
        request.options({"deny_out": ["10.0.0.1/8"]})
    with pytest.raises(UsageError, match="unknown option"):
        request.options({"host_nets": ["10.0.0.0/8"]})  # up reads it; no request sets it


# -- dual stack (issue 24): ipv6 and pool6 are parsed; up refuses ipv6 until the host side is
# built


def test_ipv6_and_pool6_are_parsed():
    o = request.options({"ipv6": True, "pool6": "fd3c:9a1e:52b0::/48"})
    assert o.ipv6 is True and o.pool6 == IPv6Network("fd3c:9a1e:52b0::/48")
    o = request.options({"ipv6": True, "pool6": None})  # None: the default, as for any field
    assert o.ipv6 is True and o.pool6 is None
    o = request.options({})
    assert o.ipv6 is False and o.pool6 is None


@pytest.mark.parametrize(
    "fields,message",
    [
        (
            {"ipv6": True, "backend": "iptables"},
            "--ipv6 needs the nft backend: the iptables backend has no IPv6 rules; "
            "use --backend nft",
        ),
        ({"pool6": "fd3c:9a1e:52b0::/48"}, "--pool6 fd3c:9a1e:52b0::/48 needs --ipv6"),
        ({"ipv6": "yes"}, "invalid --ipv6: expected true or false"),
        ({"ipv6": True, "pool6": 48}, "invalid --pool6: expected a string"),
        ({"ipv6": True, "pool6": "10.0.0.0/8"}, 'invalid --pool6 "10.0.0.0/8": not an IPv6'),
        ({"ipv6": True, "pool6": "fd3c::1/48"}, 'invalid --pool6 "fd3c::1/48": fd3c::1/48 has'),
        ({"ipv6": True, "pool6": "fd3c::/80"}, 'invalid --pool6 "fd3c::/80": a /80 is smaller'),
        ({"ipv6": True, "pool6": "fd3c::"}, 'invalid --pool6 "fd3c::": give the prefix'),
        ({"ipv6": True, "pool6": "fd3c::/128"}, 'invalid --pool6 "fd3c::/128": a /128 is'),
        ({"ipv6": True, "pool6": "fe80::%eth0/64"}, 'invalid --pool6 "fe80::%eth0/64": a pool'),
    ],
)
def test_ipv6_refusals(fields, message):
    """Each refused in one line naming what was wrong; the control beside: the same request
    without the fault is taken."""
    with pytest.raises(UsageError) as e:
        request.options(fields)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    good = {**fields, "ipv6": True, "backend": "nft", "pool6": "fd3c:9a1e:52b0::/48"}
    assert request.options(good).pool6 == IPv6Network("fd3c:9a1e:52b0::/48")


@pytest.mark.parametrize(
    "pool6,overlaps",
    [("fe80::/64", "fe80::/10"), ("ff05::/48", "ff00::/8"), ("::/64", "::/8")],
)
def test_a_pool6_of_no_hosts_is_refused(pool6, overlaps):
    o = request.options({"ipv6": True, "pool6": pool6})
    with pytest.raises(UsageError, match=f"^--pool6 {pool6} overlaps {overlaps} "):
        validate.request(o)
    validate.request(request.options({"ipv6": True, "pool6": "2001:db8:1:100::/56"}))  # control


def test_up_takes_ipv6_in_nat_mode():
    """A NAT VM on nft may have IPv6; the refusals of what has no IPv6 rules yet are
    tests/unit/test_v6_doors.py's."""
    validate.up(["a"], request.options({"ipv6": True}))
    validate.up(["a"], request.options({}))


def running(options: Options) -> Vm:
    return Vm("a", IPv4Network("172.16.0.0/30"), "fr-a", "06:00:AC:10:00:02", "eth0", options)


def test_differences_of_a_v4_vm_are_unchanged():
    vm = running(request.options({}))
    assert request.differences(vm, request.options({})) == []
    assert request.differences(vm, request.options({"egress": "none"})) == [
        "--egress: has internet, asked none"
    ]


def test_differences_name_ipv6_and_pool6():
    v4, v6 = running(request.options({})), running(request.options({"ipv6": True}))
    pool6 = {"ipv6": True, "pool6": "fd3c:9a1e:52b0::/48"}
    assert request.differences(v4, request.options({"ipv6": True})) == [
        "--ipv6: has none, asked yes"
    ]
    assert request.differences(v6, request.options({})) == ["--ipv6: has yes, asked none"]
    assert request.differences(v6, request.options({"ipv6": True})) == []
    assert request.differences(v6, request.options(pool6)) == [
        "--pool6: has none, asked fd3c:9a1e:52b0::/48"
    ]
