"""The spec-driven validator must catch what real Firecracker would reject."""

from __future__ import annotations

import pytest


def body_schema(spec, method, path):
    _template, ops, _params = spec.route(path)
    return spec.body_parameter(ops[method])["schema"]


GOOD_IFACE = {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}


def test_spec_versions_load(spec):
    assert spec.version in ("1.11.0", "1.16.1")
    assert spec.route("/network-interfaces/eth0")[0] == "/network-interfaces/{iface_id}"
    assert spec.route("/no/such/thing") is None


def test_good_interface_passes(spec):
    assert spec.errors(GOOD_IFACE, body_schema(spec, "put", "/network-interfaces/eth0")) == []


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"iface_id": "eth0"}, "missing field `host_dev_name`"),
        ({**GOOD_IFACE, "host_dev_name": 7}, "$.host_dev_name: invalid type"),
        ({**GOOD_IFACE, "hostdevname": "tap0"}, "unknown field `hostdevname`"),
        (
            {**GOOD_IFACE, "rx_rate_limiter": {"bandwidth": {"size": -1, "refill_time": 1}}},
            "$.rx_rate_limiter.bandwidth.size: -1 is less than the minimum 0",
        ),
        (
            {**GOOD_IFACE, "rx_rate_limiter": {"bandwidth": {"size": 1}}},
            "$.rx_rate_limiter.bandwidth: missing field `refill_time`",
        ),
        (
            {**GOOD_IFACE, "tx_rate_limiter": {"bytes": {"size": 1, "refill_time": 1}}},
            "$.tx_rate_limiter: unknown field `bytes`",
        ),
        (
            {**GOOD_IFACE, "tx_rate_limiter": {"ops": {"size": True, "refill_time": 1}}},
            "$.tx_rate_limiter.ops.size: invalid type: boolean",
        ),
        (
            {**GOOD_IFACE, "tx_rate_limiter": {"ops": {"size": 2**63, "refill_time": 1}}},
            "does not fit in int64",
        ),
    ],
)
def test_interface_violations_are_caught(spec, body, needle):
    problems = spec.errors(body, body_schema(spec, "put", "/network-interfaces/eth0"))
    assert any(needle in p for p in problems), problems


def test_mtu_is_unknown_to_1_11_and_bounded_in_1_16(spec_old, spec_new):
    body = {**GOOD_IFACE, "mtu": 1500}
    old = spec_old.errors(body, body_schema(spec_old, "put", "/network-interfaces/eth0"))
    assert any("unknown field `mtu`" in p for p in old)
    schema_new = body_schema(spec_new, "put", "/network-interfaces/eth0")
    assert spec_new.errors(body, schema_new) == []
    assert any("minimum 68" in p for p in spec_new.errors({**body, "mtu": 67}, schema_new))
    assert any("maximum 65535" in p for p in spec_new.errors({**body, "mtu": 65536}, schema_new))


def test_enum_and_format_pattern(spec):
    schema = body_schema(spec, "put", "/mmds/config")
    ok = {"network_interfaces": ["eth0"], "version": "V2", "ipv4_address": "169.254.170.2"}
    assert spec.errors(ok, schema) == []
    problems = spec.errors({**ok, "version": "V3"}, schema)
    assert any("unknown variant `V3`" in p for p in problems)
    for bad in ("10.0.0.1", "169.254.0.1", "169.254.255.1", "169.254.1.256", "169.254.01.1"):
        problems = spec.errors({**ok, "ipv4_address": bad}, schema)
        assert any("does not match format" in p for p in problems), bad


def test_free_form_objects_accept_anything(spec):
    schema = body_schema(spec, "put", "/mmds")
    assert spec.errors({"latest": {"meta-data": {"x": [1, 2]}}}, schema) == []


def test_ref_resolution_and_nested_arrays(spec):
    full = spec.definition("FullVmConfiguration")
    config = {
        "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
        "network-interfaces": [GOOD_IFACE, {"iface_id": "eth1"}],
    }
    problems = spec.errors(config, full)
    assert problems == ["$.network-interfaces[1]: missing field `host_dev_name`"]
