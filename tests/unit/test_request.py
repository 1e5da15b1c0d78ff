"""One request model for every door: fields -> Options -> fields gives the same Options."""

from __future__ import annotations

import pytest

from fireroute import request
from fireroute.errors import UsageError

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
