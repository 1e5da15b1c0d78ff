"""What a VM with IPv6 looks like at the doors (issue 24, docs/ipv6-plan.md 1.7): the CLI's
--ipv6 and --pool6, the refusals of what has no IPv6 rules yet (each beside its control), the
JSON every door answers with, the guest script and the summary."""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest

from fireroute.cli import args as spec
from fireroute.cli import parser
from fireroute.cli.inputs import _options
from fireroute.errors import UsageError
from fireroute.model import Options
from fireroute.render import guest, record
from tests.unit.test_plan import vm
from tests.unit.test_want_v6 import v6


@pytest.mark.parametrize("read", [spec.parse_hot, parser.parse])
def test_the_cli_takes_ipv6_and_pool6(read):
    o = _options(read(["up", "a", "--ipv6", "--pool6", "fd00:1:2::/48"]))
    assert o.ipv6 and o.pool6 == IPv6Network("fd00:1:2::/48")
    o = _options(read(["up", "a"]))  # the control: without them, as before
    assert not o.ipv6 and o.pool6 is None


@pytest.mark.parametrize(
    "kw, refused",
    [
        ({"mode": "bridge", "dhcp": True}, "--ipv6 needs a known guest address"),
    ],
)
def test_what_has_no_ipv6_rules_yet_is_refused(kw, refused):
    from fireroute import request

    with pytest.raises(UsageError, match=refused):
        request.options({"ipv6": True, **kw})
    request.options(kw)  # the control: the same options without IPv6 are taken


def test_policy_and_ports_are_taken_with_ipv6():
    """They have IPv6 rules (want/nft.py elements6): taken, IPv6 CIDRs among them."""
    from fireroute import request

    o = request.options(
        {
            "ipv6": True,
            "egress": "public",
            "allow_out": ["2001:db8:1::/48", "10.1.0.0/16"],
            "deny_out": ["2000::1", "10.0.0.0/8"],
            "publish": ["8080:80", "[2001:db8::7]:8443:443/tcp"],
        }
    )
    assert [str(n) for n in o.allow_out] == ["10.1.0.0/16", "2001:db8:1::/48"]
    assert [str(n) for n in o.deny_out] == ["10.0.0.0/8", "2000::1/128"]
    assert [str(p) for p in o.publish] == ["8080:80/tcp", "[2001:db8::7]:8443:443/tcp"]
    assert Options.from_identity(o.identity()) == o  # (as the state file holds them)


def test_the_json_carries_ipv6():
    a = v6("a", 1)
    assert record.as_dict(a)["ipv6"] == {
        "address": "fd3c:9a1e:52b0:1::2",
        "prefix": 64,
        "gateway": "fe80::1:9a1e:52b0:1",
        "block": "fd3c:9a1e:52b0:1::/64",
    }
    assert record.as_dict(vm("b", 2))["ipv6"] is None  # the control


def test_the_guest_script_configures_ipv6():
    lines = guest.guest_script(v6("a", 1)).splitlines()
    assert lines[-3:] == [
        "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad",
        "ip -6 addr add fd3c:9a1e:52b0:1::2/64 dev eth0",
        "ip -6 route add default via fe80::1:9a1e:52b0:1 dev eth0",
    ]
    assert "ip -6" not in guest.guest_script(vm("b", 2))  # the control
    old = v6("o", 3)
    old.own_gateway6 = False  # a lease from before gateways of their own: what it was told
    last = guest.guest_script(old).splitlines()[-1]
    assert last == "ip -6 route add default via fe80::1 dev eth0"


def test_the_summary_says_ipv6_or_how_to_keep_it_off():
    assert "ipv6:       fd3c:9a1e:52b0:1::2/64 via fe80::1" in record.summary(v6("a", 1))
    text = record.summary(vm("b", 2))
    assert "off on the tap" in text and "ipv6.disable=1" in text
    assert "net.ipv6.conf.eth0.disable_ipv6=1" in text


def test_the_daemons_record_keeps_the_gateway_the_lease_has():
    """The hand-off's record of a VM (handoff.wire/unwire, what the CLI prints from): a
    VM's own gateway and an older lease's fe80::1 both come back as they were; a record from
    a daemon from before gateways of their own (no key) is an fe80::1 one, as it was."""
    from fireroute import handoff

    own, old = v6("a", 1), v6("o", 3)
    old.own_gateway6 = False
    for v in (own, old):
        assert handoff.unwire(handoff.wire(v)).gateway6 == v.gateway6
    assert str(handoff.unwire(handoff.wire(own)).gateway6) == "fe80::1:9a1e:52b0:1"
    earlier = handoff.wire(own)
    del earlier["own_gateway6"]
    assert str(handoff.unwire(earlier).gateway6) == "fe80::1"
