"""The CNI protocol layer against the spec's text: requests read and refused with the spec's
error codes, results shaped per version."""

from __future__ import annotations

import json

import pytest

from fireroute.cni import protocol as p

CONF = {"cniVersion": "1.0.0", "name": "fc", "type": "fireroute"}
ADD = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "veth0", "CNI_PATH": "/opt/cni/bin"}  # fmt: skip


def req(env: dict, conf: object) -> p.Request:
    return p.Request(env, json.dumps(conf).encode() if not isinstance(conf, bytes) else conf)


def code(env: dict, conf: object) -> int:
    with pytest.raises(p.CniError) as e:
        req(env, conf)
    return e.value.code


def test_a_good_add_is_read():
    r = req(
        {**ADD, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"}, {**CONF, "pool": "10.9.0.0/16"}
    )
    assert (r.command, r.container, r.netns, r.ifname) == ("ADD", "abc123", "/run/netns/x", "veth0")
    assert r.args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"} and r.version == "1.0.0"
    assert r.options() == {"pool": "10.9.0.0/16"}


@pytest.mark.parametrize(
    "env,conf,want",
    [
        ({**ADD, "CNI_COMMAND": "FROB"}, CONF, p.BAD_ENV),
        ({k: v for k, v in ADD.items() if k != "CNI_NETNS"}, CONF, p.BAD_ENV),
        ({**ADD, "CNI_CONTAINERID": "-bad"}, CONF, p.BAD_ENV),
        ({**ADD, "CNI_IFNAME": "x" * 16}, CONF, p.BAD_ENV),
        ({**ADD, "CNI_ARGS": "novalue"}, CONF, p.BAD_ENV),
        (ADD, b"{not json", p.DECODE),
        (ADD, [1], p.DECODE),
        (ADD, {**CONF, "cniVersion": "0.2.0"}, p.INCOMPATIBLE),
        ({**ADD, "CNI_COMMAND": "CHECK"}, {**CONF, "cniVersion": "0.3.1"}, p.INCOMPATIBLE),
        ({**ADD, "CNI_COMMAND": "GC"}, CONF, p.INCOMPATIBLE),  # GC is 1.1.0's
        (ADD, {**CONF, "frobnicate": 1}, p.UNSUPPORTED_FIELD),
        (ADD, {"cniVersion": "1.0.0", "type": "fireroute"}, p.BAD_CONFIG),
    ],
)
def test_bad_requests_get_the_specs_codes(env, conf, want):
    assert code(env, conf) == want
    good = {**CONF, "cniVersion": "1.1.0"}
    assert req(ADD, good).command == "ADD"  # the positive control beside each


def test_bad_option_values_are_invalid_config():
    r = req(ADD, {**CONF, "blockSize": "31"})
    with pytest.raises(p.CniError) as e:
        r.options()
    assert e.value.code == p.BAD_CONFIG and "block size" in e.value.details
    assert req(ADD, {**CONF, "blockSize": 30}).options() == {"block_size": 30}


def test_unsupported_field_names_key_and_value():
    with pytest.raises(p.CniError) as e:
        req(ADD, {**CONF, "frobnicate": 7})
    assert "frobnicate=7" in e.value.details
    assert e.value.as_json("1.0.0") == {
        "cniVersion": "1.0.0", "code": 2, "msg": "unsupported field in network configuration",
        "details": "frobnicate=7",
    }  # fmt: skip


def test_version_needs_no_container_and_lists_every_version():
    r = req({"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.1.0"})
    assert p.version_result(r.version) == {
        "cniVersion": "1.1.0",
        "supportedVersions": list(p.SUPPORTED),
    }
    assert req({"CNI_COMMAND": "VERSION"}, b"").version == "0.3.0"  # no input: the oldest


def test_dns_nameservers_become_the_guests_ipv4_dns():
    r = req(ADD, {**CONF, "dns": {"nameservers": ["192.0.2.53", "2001:db8::53"]}})
    assert r.options() == {"dns": ["192.0.2.53"]}


@pytest.mark.parametrize("version", p.SUPPORTED)
def test_result_shape_per_version(version):
    ifaces = [{"name": "fr-x"}, {"name": "tap0", "mac": "06:00:0a:09:00:02", "sandbox": "abc"}]
    ips = [{"address": "10.9.0.2/30", "gateway": "10.9.0.1", "interface": 1}]
    out = p.result(version, ifaces, ips, [{"dst": "0.0.0.0/0"}], {"nameservers": ["192.0.2.53"]})
    assert out["cniVersion"] == version and out["interfaces"] == ifaces
    assert ("version" in out["ips"][0]) == (version < "1.0.0")
    assert out["routes"] == [{"dst": "0.0.0.0/0"}] and out["dns"]["nameservers"] == ["192.0.2.53"]
    assert "routes" not in p.result(version, ifaces, ips, [])  # empty optional fields left out
