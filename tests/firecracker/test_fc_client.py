"""FirecrackerClient and its operations against the spec-validating stand-in."""

from __future__ import annotations

import json

import pytest

from fireroute.firecracker import client as fc
from fireroute.firecracker.client import (
    FirecrackerApiError,
    FirecrackerClient,
    FirecrackerError,
    FirecrackerProtocolError,
    FirecrackerUnreachable,
)
from fireroute.firecracker.ratelimit import rate_limiter

IP_ARG = "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"
IFACE = {"iface_id": "eth0", "host_dev_name": "fr-tap0", "guest_mac": "06:00:ac:10:00:02"}


def boot(client, boot_args=None, initrd=None):
    body = {"kernel_image_path": "/srv/vmlinux"}
    if boot_args is not None:
        body["boot_args"] = boot_args
    if initrd is not None:
        body["initrd_path"] = initrd
    client.put("/boot-source", body)


def start(client):
    client.put("/actions", {"action_type": "InstanceStart"})


# -- basics -------------------------------------------------------------------------


def test_version(client, standin):
    expected = tuple(int(x) for x in standin.version.split("."))
    assert client.version() == expected
    assert client.version() == expected
    assert len(standin.requests("GET", "/version")) == 1  # cached


def test_version_from_a_vmm_without_get_version(client, standin):
    standin.as_older("0.24.4")
    assert client.version() == (0, 24, 4)
    assert client.version() == (0, 24, 4)  # cached
    assert [r.path for r in standin.rejected] == ["/version"]
    assert len(standin.requests("GET", "/")) == 1


def test_version_does_not_fall_back_on_other_faults(client, standin):
    body = b'{"fault_message": "busy"}'
    standin.queue_raw(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with pytest.raises(FirecrackerApiError, match="busy"):
        client.version()
    assert standin.requests("GET", "/") == []
    assert client.version()[0] == 1  # positive control: the same client, answered normally


def test_get_returns_json_and_put_returns_none(client, standin):
    assert client.get("/")["state"] == "Not started"
    assert client.put("/boot-source", {"kernel_image_path": "/k"}) is None
    assert standin.accepted[-1].body == {"kernel_image_path": "/k"}
    assert standin.accepted[-1].headers["content-type"] == "application/json"


def test_chunked_responses_are_decoded(client, standin):
    standin.chunked = True
    boot(client, "console=ttyS0 reboot=k")
    config = client.get("/vm/config")
    assert config["boot-source"]["boot_args"] == "console=ttyS0 reboot=k"
    assert client.version()[0] == 1


def test_fault_message_reaches_the_error_verbatim(client, standin):
    message = 'Unable to create the network device: Open tap device failed: "fr-tap0" ✗ (EBUSY)'
    body = json.dumps({"fault_message": message}).encode()
    standin.queue_raw(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with pytest.raises(FirecrackerApiError) as info:
        fc.put_network_interface(client, IFACE)
    err = info.value
    assert err.fault_message == message
    assert (err.method, err.path, err.status) == ("PUT", "/network-interfaces/eth0", 400)
    assert err.sent_body == IFACE
    assert str(err) == f"firecracker PUT /network-interfaces/eth0 failed (400): {message}"
    assert isinstance(err, FirecrackerError)


def test_stand_in_rejection_message_is_passed_through(client, standin):
    with pytest.raises(FirecrackerApiError) as info:
        client.put("/network-interfaces/eth0", {**IFACE, "iface_id": "eth1"})
    assert info.value.status == 400
    assert info.value.fault_message == (
        "The id from the path [eth0] does not match the id from the body [eth1]!"
    )
    assert standin.rejected[-1].fault == info.value.fault_message


def test_unknown_path_is_rejected(client):
    with pytest.raises(FirecrackerApiError, match=r"Invalid request method and/or path"):
        client.put("/network-interface/eth0", IFACE)


# -- network interfaces -------------------------------------------------------------


def test_put_interface_without_mtu_skips_version_query(client, standin):
    sent = fc.put_network_interface(client, IFACE)
    assert sent == IFACE
    assert [(r.method, r.path) for r in standin.accepted] == [("PUT", "/network-interfaces/eth0")]
    assert standin.interfaces["eth0"] == IFACE


def test_mtu_is_sent_only_to_versions_that_know_it(client, standin):
    sent = fc.put_network_interface(client, IFACE, mtu=9000)
    put = standin.requests("PUT", "/network-interfaces/eth0")[-1]
    if client.version() >= (1, 16, 0):
        assert sent == {**IFACE, "mtu": 9000} == put.body
    else:
        assert sent == IFACE == put.body


def test_old_firecracker_really_rejects_mtu(standin_old):
    """Proves the version check matters: 1.11.0 refuses the unknown field."""
    client = FirecrackerClient(standin_old.socket_path)
    with pytest.raises(FirecrackerApiError) as info:
        client.put("/network-interfaces/eth0", {**IFACE, "mtu": 1500})
    assert "unknown field `mtu`" in info.value.fault_message
    assert standin_old.accepted == []


def test_mtu_from_body_and_validation(standin_new):
    client = FirecrackerClient(standin_new.socket_path)
    sent = fc.put_network_interface(client, {**IFACE, "mtu": 1400})
    assert sent["mtu"] == 1400
    with pytest.raises(ValueError, match="conflicting mtu"):
        fc.put_network_interface(client, {**IFACE, "mtu": 1400}, mtu=1500)
    for bad in (67, 65536, "1500", True):
        with pytest.raises(ValueError, match="invalid mtu"):
            fc.put_network_interface(client, IFACE, mtu=bad)


@pytest.mark.parametrize("bad", ["eth-0", "", "eth0/x", "ethé", None])
def test_bad_iface_ids_are_refused_before_sending(client, standin, bad):
    with pytest.raises(ValueError, match="iface_id"):
        fc.put_network_interface(client, {**IFACE, "iface_id": bad})
    assert standin.accepted == [] and standin.rejected == []


def test_stand_in_refuses_ids_firecracker_refuses(client):
    with pytest.raises(FirecrackerApiError, match="alphanumeric characters and underscores"):
        client.put("/network-interfaces/eth-0", {**IFACE, "iface_id": "eth-0"})


def test_patch_rate_limiters_after_boot(client, standin):
    limiter = rate_limiter(bandwidth="200Mbit", ops="10000/s", burst="10MB")
    fc.put_network_interface(
        client, {**IFACE, "rx_rate_limiter": limiter, "tx_rate_limiter": limiter}
    )
    boot(client, "console=ttyS0")
    start(client)
    body = fc.patch_network_interface(
        client, "eth0", tx_rate_limiter=rate_limiter(bandwidth="off", ops="off")
    )
    assert body == {
        "iface_id": "eth0",
        "tx_rate_limiter": {
            "bandwidth": {"size": 0, "refill_time": 0},
            "ops": {"size": 0, "refill_time": 0},
        },
    }
    assert standin.requests("PATCH")[-1].body == body
    assert standin.interfaces["eth0"]["tx_rate_limiter"] == {}
    assert standin.interfaces["eth0"]["rx_rate_limiter"] == limiter

    fc.patch_network_interface(client, "eth0", rx_rate_limiter=rate_limiter(bandwidth="1Gbit"))
    rx = standin.interfaces["eth0"]["rx_rate_limiter"]
    assert rx["bandwidth"] == {"size": 125_000_000, "refill_time": 1000}
    assert rx["ops"] == limiter["ops"]


def test_patch_is_post_boot_only(client):
    fc.put_network_interface(client, IFACE)
    with pytest.raises(FirecrackerApiError, match="before starting the microVM"):
        fc.patch_network_interface(client, "eth0", rx_rate_limiter=rate_limiter(ops="5/s"))


def test_patch_with_invalid_limiter_is_rejected_by_the_spec(client):
    fc.put_network_interface(client, IFACE)
    boot(client)
    start(client)
    with pytest.raises(FirecrackerApiError, match="missing field `refill_time`"):
        fc.patch_network_interface(client, "eth0", rx_rate_limiter={"bandwidth": {"size": 5}})


def test_patch_needs_something_to_change(client):
    with pytest.raises(ValueError, match="nothing to update"):
        fc.patch_network_interface(client, "eth0")


# -- MMDS ---------------------------------------------------------------------------


def test_mmds_config(client, standin):
    fc.put_network_interface(client, IFACE)
    body = fc.put_mmds_config(client, ["eth0"], "V2", "169.254.170.2")
    assert body == {
        "version": "V2",
        "network_interfaces": ["eth0"],
        "ipv4_address": "169.254.170.2",
    }
    assert standin.mmds_config == body
    assert fc.put_mmds_config(client, ["eth0"], "V1") == {
        "version": "V1",
        "network_interfaces": ["eth0"],
    }


def test_mmds_config_needs_existing_interfaces(client):
    with pytest.raises(FirecrackerApiError, match="network interface IDs"):
        fc.put_mmds_config(client, ["eth0"])


@pytest.mark.parametrize(
    "address", ["169.254.0.1", "169.254.255.9", "10.0.0.1", "169.254.1", "169.254.01.2", "x"]
)
def test_mmds_address_checked_like_the_spec(client, standin, address):
    fc.put_network_interface(client, IFACE)
    with pytest.raises(ValueError, match="invalid MMDS address"):
        fc.put_mmds_config(client, ["eth0"], "V2", address)
    # ...and the stand-in (the spec's pattern) agrees these are invalid
    with pytest.raises(FirecrackerApiError, match="does not match format"):
        client.put("/mmds/config", {"network_interfaces": ["eth0"], "ipv4_address": address})


def test_mmds_argument_checks(client):
    with pytest.raises(ValueError, match="MMDS version"):
        fc.put_mmds_config(client, ["eth0"], "V3")
    with pytest.raises(ValueError, match="non-empty list"):
        fc.put_mmds_config(client, [])
    with pytest.raises(ValueError, match="non-empty list"):
        fc.put_mmds_config(client, "eth0")


# -- boot args ----------------------------------------------------------------------


def test_merge_boot_args_replaces_ip_and_keeps_the_rest(client, standin):
    boot(client, "console=ttyS0 ip=10.9.9.2::10.9.9.1:255.255.255.252::eth0:off reboot=k", "/i")
    assert fc.merge_boot_args(client, IP_ARG) is True
    put = standin.requests("PUT", "/boot-source")[-1]
    assert put.body == {
        "kernel_image_path": "/srv/vmlinux",
        "initrd_path": "/i",
        "boot_args": f"console=ttyS0 {IP_ARG} reboot=k",
    }


def test_merge_boot_args_drops_null_fields_from_get(client, standin):
    # GET /vm/config reports initrd_path: null; echoing it would be refused
    boot(client, "console=ttyS0 reboot=k panic=1")
    assert client.get("/vm/config")["boot-source"]["initrd_path"] is None
    assert fc.merge_boot_args(client, IP_ARG) is True
    assert standin.boot_source == {
        "kernel_image_path": "/srv/vmlinux",
        "boot_args": f"console=ttyS0 reboot=k panic=1 {IP_ARG}",
    }


def test_merge_boot_args_is_idempotent(client, standin):
    boot(client, f"console=ttyS0 {IP_ARG}")
    puts = len(standin.requests("PUT", "/boot-source"))
    assert fc.merge_boot_args(client, IP_ARG) is False
    assert len(standin.requests("PUT", "/boot-source")) == puts


def test_merge_boot_args_removes_ip(client, standin):
    boot(client, f"console=ttyS0 {IP_ARG} panic=1")
    assert fc.merge_boot_args(client, None) is True
    assert standin.boot_source["boot_args"] == "console=ttyS0 panic=1"


def test_merge_boot_args_without_boot_source(client):
    with pytest.raises(FirecrackerError, match="no boot source configured"):
        fc.merge_boot_args(client, IP_ARG)


def test_merge_boot_args_after_start_is_refused(client):
    boot(client, "console=ttyS0")
    start(client)
    with pytest.raises(FirecrackerApiError, match="after starting the microVM"):
        fc.merge_boot_args(client, IP_ARG)


# -- a broken client is caught --------------------------------------------------------


def test_stand_in_catches_a_client_that_ignores_the_version(standin_old, monkeypatch):
    """If put_network_interface forgot the version check, the stand-in would say so."""
    client = FirecrackerClient(standin_old.socket_path)
    monkeypatch.setattr(fc, "MTU_MIN_VERSION", (0, 0, 0))
    with pytest.raises(FirecrackerApiError, match="unknown field `mtu`"):
        fc.put_network_interface(client, IFACE, mtu=1500)


def test_stand_in_catches_a_misspelled_field(client, standin):
    with pytest.raises(FirecrackerApiError, match="unknown field `ifaceid`"):
        client.patch("/network-interfaces/eth0", {"ifaceid": "eth0"})
    assert standin.accepted == []


# -- transport failures -------------------------------------------------------------


def test_missing_socket_is_unreachable(tmp_path):
    path = str(tmp_path / "nope.sock")
    with pytest.raises(FirecrackerUnreachable) as info:
        FirecrackerClient(path).get("/version")
    assert info.value.socket_path == path
    assert info.value.reason == "No such file or directory"
    assert path in str(info.value)


def test_refused_connection_is_unreachable(tmp_path):
    import socket

    path = str(tmp_path / "dead.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)  # bound but never listening: connect() is refused
    try:
        with pytest.raises(FirecrackerUnreachable, match="Connection refused"):
            FirecrackerClient(path).get("/version")
    finally:
        sock.close()


def test_silent_server_times_out(tmp_path):
    import socket

    from fireroute.firecracker.client import FirecrackerTimeout

    path = str(tmp_path / "slow.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)  # accepts into the backlog but never answers
    try:
        with pytest.raises(FirecrackerTimeout, match=r"within 0\.2s"):
            FirecrackerClient(path, timeout=0.2).get("/version")
    finally:
        sock.close()


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"garbage\r\n\r\n", FirecrackerProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{x}", FirecrackerProtocolError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", FirecrackerProtocolError),
    ],
)
def test_malformed_responses(client, standin, raw, error):
    standin.queue_raw(raw)
    with pytest.raises(error):
        client.get("/version")


def test_error_without_json_body(client, standin):
    standin.queue_raw(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops\n")
    with pytest.raises(FirecrackerApiError) as info:
        client.get("/version")
    assert info.value.status == 500 and info.value.fault_message == "oops"
    assert str(info.value) == "firecracker GET /version failed (500): oops"


def test_interim_response_is_skipped(client, standin):
    standin.queue_raw(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b'HTTP/1.1 200 OK\r\nContent-Length: 36\r\n\r\n{"firecracker_version": "1.7.0-dev"}'
    )
    assert client.version() == (1, 7, 0)


def test_body_without_length_is_read_until_close(client, standin):
    standin.queue_raw(b'HTTP/1.1 200 OK\r\n\r\n{"firecracker_version": "1.2.3"}', close=True)
    assert client.get("/version") == {"firecracker_version": "1.2.3"}


def test_response_cut_short_is_unreachable(client, standin):
    standin.queue_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", close=True)
    with pytest.raises(FirecrackerUnreachable, match="closed before the response was complete"):
        client.get("/version")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1.16.1", (1, 16, 1)),
        ("v1.7.0-dev", (1, 7, 0)),
        ("1.12", (1, 12, 0)),
        ("2.0.0-rc1", (2, 0, 0)),
    ],
)
def test_parse_version(text, expected):
    assert fc.parse_version(text) == expected


def test_bad_paths_are_refused():
    client = FirecrackerClient("/nonexistent")
    for path in ("version", "/a b", "/a\r\nX: y"):
        with pytest.raises(ValueError, match="invalid API path"):
            client.get(path)
