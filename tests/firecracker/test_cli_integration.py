"""The Firecracker commands end to end: ``python -m fireroute`` in a throwaway network
namespace (the ``host`` fixture), talking to the spec-validating stand-in over its unix socket
(reachable from inside the namespace: the filesystem is shared).

Needs root (namespaces); the API is the project's description of it (``apidesc``), checked
against Firecracker's OpenAPI specs wherever ``../shared/reference`` is.
"""

from __future__ import annotations

import json

import pytest

from fireroute.firecracker.client import FirecrackerClient
from tests.conftest import Host

pytestmark = pytest.mark.privileged

KERNEL_ARGS = "console=ttyS0 reboot=k ip=10.9.9.2::10.9.9.1:255.255.255.0::eth0:off panic=1"
# First VM in the default pool: block 172.16.0.0/30, guest .2, tap .1.
IP_ARG = "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"
MAC = "06:00:AC:10:00:02"


def mtu_supported(standin) -> bool:
    return tuple(int(x) for x in standin.version.split(".")) >= (1, 16, 0)


def api(standin) -> FirecrackerClient:
    return FirecrackerClient(standin.socket_path, timeout=5.0)


def boot_source(standin, boot_args: str = KERNEL_ARGS) -> None:
    api(standin).put("/boot-source", {"kernel_image_path": "/srv/vmlinux", "boot_args": boot_args})


def start(standin) -> None:
    api(standin).put("/actions", {"action_type": "InstanceStart"})


def one_line_error(p, needle: str) -> None:
    assert p.returncode != 0, p.stdout
    assert needle in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr


def our_taps(host: Host) -> list[str]:
    return [n for n in host.links() if n.startswith("fr-")]


def vms(host: Host) -> list[str]:
    return [v["name"] for v in json.loads(host.fireroute("ls", "--json").stdout)]


# -- attach ---------------------------------------------------------------------------------


def test_attach_sends_the_right_body(host: Host, standin):
    host.fireroute("up", "web-1")
    boot_source(standin)
    p = host.fireroute(
        "attach",
        "web-1",
        "--socket",
        standin.socket_path,
        "--mtu",
        "1400",
        "--boot-source",
        "--rx-rate",
        "200Mbit",
        "--tx-rate",
        "100Mbit",
        "--burst",
        "10MB",
        "--rx-ops",
        "10000/s",
    )
    expected = {
        "iface_id": "eth0",
        "guest_mac": MAC,
        "host_dev_name": "fr-web-1",
        "rx_rate_limiter": {
            "bandwidth": {"size": 25_000_000, "refill_time": 1000, "one_time_burst": 10_000_000},
            "ops": {"size": 10000, "refill_time": 1000},
        },
        "tx_rate_limiter": {
            "bandwidth": {"size": 12_500_000, "refill_time": 1000, "one_time_burst": 10_000_000},
        },
    }
    if mtu_supported(standin):
        expected["mtu"] = 1400
        assert "mtu" not in p.stderr
    else:
        assert "--mtu 1400 was not sent" in p.stderr
    puts = standin.requests("PUT", "/network-interfaces/eth0")
    assert [r.body for r in puts] == [expected]
    assert standin.boot_source["boot_args"] == f"console=ttyS0 reboot=k {IP_ARG} panic=1"
    assert standin.boot_source["kernel_image_path"] == "/srv/vmlinux"
    assert not standin.rejected
    assert "vm web-1 attached" in p.stdout and "fr-web-1" in p.stdout
    assert "rx limit 200Mbit/s + 10000 ops/s, tx limit 100Mbit/s" in p.stdout


def test_attach_mmds_and_iface_override(host: Host, standin):
    host.fireroute("up", "web-1")
    p = host.fireroute(
        "attach",
        "web-1",
        "--socket",
        standin.socket_path,
        "--iface-id",
        "net1",
        "--mmds",
        "--mmds-address",
        "169.254.170.2",
        "--json",
    )
    report = json.loads(p.stdout)
    assert report["interface"]["iface_id"] == "net1"
    assert standin.interfaces["net1"]["host_dev_name"] == "fr-web-1"
    assert standin.mmds_config == {
        "version": "V2",
        "network_interfaces": ["net1"],
        "ipv4_address": "169.254.170.2",
    }
    assert standin.boot_source is None  # no --boot-source: boot source untouched
    assert not standin.rejected


def test_attach_fault_message_reaches_the_user_verbatim(host: Host, standin):
    host.fireroute("up", "web-1")
    boot_source(standin)
    start(standin)
    p = host.fireroute("attach", "web-1", "--socket", standin.socket_path, check=False)
    assert p.returncode == 1
    one_line_error(p, "The requested operation is not supported after starting the microVM.")
    assert '"host_dev_name":"fr-web-1"' in p.stderr  # what was being sent
    assert "PUT /network-interfaces/eth0" in p.stderr
    assert our_taps(host) == ["fr-web-1"]  # attach alone never removes the network


def test_attach_boot_source_missing_is_refused_before_anything_is_sent(host: Host, standin):
    host.fireroute("up", "web-1")
    p = host.fireroute(
        "attach", "web-1", "--socket", standin.socket_path, "--boot-source", check=False
    )
    one_line_error(p, "no boot source")
    assert not [r for r in standin.accepted if r.method != "GET"]


# -- up --socket ----------------------------------------------------------------------------


def test_up_socket_end_to_end(host: Host, standin):
    boot_source(standin)
    p = host.fireroute(
        "up",
        "web-1",
        "--socket",
        standin.socket_path,
        "--boot-source",
        "--mmds",
        "--tx-rate",
        "1Gbit",
        "--mtu",
        "9000",
    )
    assert "fr-web-1" in host.links()
    assert host.addrs("fr-web-1") == ["172.16.0.1/30"]
    assert vms(host) == ["web-1"]
    body = standin.interfaces["eth0"]
    assert body["host_dev_name"] == "fr-web-1" and body["guest_mac"] == MAC
    assert body["tx_rate_limiter"] == {"bandwidth": {"size": 125_000_000, "refill_time": 1000}}
    assert ("mtu" in body) == mtu_supported(standin)
    assert IP_ARG in standin.boot_source["boot_args"]
    assert standin.mmds_config == {"version": "V2", "network_interfaces": ["eth0"]}
    assert "vm web-1: tap fr-web-1" in p.stdout and "attached" in p.stdout
    start(standin)  # the configuration is one Firecracker accepts to boot
    assert not standin.rejected


@pytest.mark.parametrize("failure", ["started", "no-boot-source", "no-socket", "late-fault"])
def test_failed_attach_rolls_back_the_up(host: Host, standin, failure):
    socket = standin.socket_path
    extra: list[str] = []
    if failure == "started":
        boot_source(standin)
        start(standin)
        needle = "The requested operation is not supported after starting the microVM."
    elif failure == "no-boot-source":
        extra = ["--boot-source"]
        needle = "no boot source"
    elif failure == "no-socket":
        socket = standin.socket_path + ".missing"
        needle = "cannot reach firecracker API socket"
    else:  # the interface is accepted, then MMDS is refused: still all or nothing
        extra = ["--mmds"]
        # answers to GET /vm/config, PUT /network-interfaces/eth0, PUT /mmds/config
        standin.queue_raw(standin.encode(200, {"network-interfaces": []}))
        standin.queue_raw(standin.encode(204, None))
        standin.queue_raw(standin.encode(400, {"fault_message": "mmds said no here"}))
        needle = "mmds said no here"
    p = host.fireroute("up", "web-1", "--socket", socket, *extra, check=False)
    assert p.returncode == 1
    one_line_error(p, needle)
    assert "rolled back" in p.stderr
    assert our_taps(host) == []
    assert vms(host) == []
    assert "172.16.0.2" not in host.nft_text()


def test_failed_attach_keeps_a_vm_that_was_already_up(host: Host, standin):
    host.fireroute("up", "web-1")
    boot_source(standin)
    start(standin)
    p = host.fireroute("up", "web-1", "--socket", standin.socket_path, check=False)
    one_line_error(p, "not supported after starting")
    assert "rolled back" not in p.stderr
    assert our_taps(host) == ["fr-web-1"] and vms(host) == ["web-1"]


def test_up_without_socket_does_not_import_the_firecracker_layer(host: Host):
    p = host.fireroute("up", "web-1", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert "fireroute.manager" in p.stderr  # the import log is there
    assert "fireroute.firecracker" not in p.stderr


# -- limit ----------------------------------------------------------------------------------


def test_limit_patches_a_running_vm_and_off_removes_a_limit(host: Host, standin):
    boot_source(standin)
    host.fireroute(
        "up", "web-1", "--socket", standin.socket_path, "--rx-rate", "200Mbit", "--tx-rate",
        "100Mbit",
    )  # fmt: skip
    start(standin)
    p = host.fireroute(
        "limit", "web-1", "--socket", standin.socket_path, "--rx-rate", "50Mbit", "--tx-rate",
        "off",
    )  # fmt: skip
    patches = standin.requests("PATCH", "/network-interfaces/eth0")
    assert [r.body for r in patches] == [
        {
            "iface_id": "eth0",
            "rx_rate_limiter": {"bandwidth": {"size": 6_250_000, "refill_time": 1000}},
            "tx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}},
        }
    ]
    iface = standin.interfaces["eth0"]
    assert iface["rx_rate_limiter"] == {"bandwidth": {"size": 6_250_000, "refill_time": 1000}}
    assert iface["tx_rate_limiter"] == {}  # the stand-in applied "off" like Firecracker does
    assert "rx 50Mbit/s" in p.stdout and "tx bandwidth off" in p.stdout
    assert not standin.rejected


def test_limit_before_start_shows_firecrackers_answer(host: Host, standin):
    host.fireroute("up", "web-1", "--socket", standin.socket_path)
    p = host.fireroute(
        "limit", "web-1", "--socket", standin.socket_path, "--rx-ops", "500/s", check=False
    )
    one_line_error(p, "not supported before starting the microVM")
    assert '"ops":{"size":500,"refill_time":1000}' in p.stderr


# -- config ---------------------------------------------------------------------------------

EXISTING = {
    "boot-source": {
        "kernel_image_path": "/srv/vmlinux",
        "boot_args": "console=ttyS0 ip=10.0.0.2::10.0.0.1:255.255.255.252::eth0:off reboot=k "
        "panic=1 -- ip=for-init",
    },
    "drives": [{"drive_id": "rootfs", "path_on_host": "/srv/rootfs.ext4", "is_root_device": True}],
    "network-interfaces": [
        {"iface_id": "mgmt", "host_dev_name": "tapmgmt"},
        {"iface_id": "eth0", "host_dev_name": "old-tap", "guest_mac": "06:00:00:00:00:01"},
    ],
    "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024},
}

GOLDEN = """\
{
  "boot-source": {
    "kernel_image_path": "/srv/vmlinux",
    "boot_args": "console=ttyS0 ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off reboot=k \
panic=1 -- ip=for-init"
  },
  "drives": [
    {
      "drive_id": "rootfs",
      "path_on_host": "/srv/rootfs.ext4",
      "is_root_device": true
    }
  ],
  "network-interfaces": [
    {
      "iface_id": "mgmt",
      "host_dev_name": "tapmgmt"
    },
    {
      "iface_id": "eth0",
      "guest_mac": "06:00:AC:10:00:02",
      "host_dev_name": "fr-web-1"
    }
  ],
  "machine-config": {
    "vcpu_count": 2,
    "mem_size_mib": 1024
  }
}
"""


def test_config_merge_golden(host: Host, tmp_path):
    host.fireroute("up", "web-1")
    src = tmp_path / "vm.json"
    src.write_text(json.dumps(EXISTING))
    out = tmp_path / "out.json"
    p = host.fireroute("config", "web-1", "--merge", str(src), "-o", str(out))
    assert p.stdout == "" and p.stderr == ""
    assert out.read_text() == GOLDEN
    assert json.loads(src.read_text()) == EXISTING  # the input is not touched
    # in place, twice: the same result (idempotent)
    host.fireroute("config", "web-1", "--merge", str(src), "-o", str(src))
    host.fireroute("config", "web-1", "--merge", str(src), "-o", str(src))
    assert src.read_text() == GOLDEN
    # to stdout when there is no -o
    assert host.fireroute("config", "web-1", "--merge", str(out)).stdout == GOLDEN


def test_config_merge_of_a_second_vm_never_takes_the_first_vms_ip_argument(host: Host, tmp_path):
    """Two VMs in one Firecracker (two NICs): the kernel takes one ip= argument. A second VM
    on the same guest interface is refused naming both VMs, the file untouched; the same
    merge with its own guest interface adds the NIC, keeps the first ip= and says so."""
    host.fireroute("up", "a")
    host.fireroute("up", "b", "--iface-id", "net1")
    host.fireroute("up", "c", "--iface-id", "net2", "--guest-iface", "eth1")
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"boot-source": {"kernel_image_path": "/k"}}))
    host.fireroute("config", "a", "--merge", str(cfg), "-o", str(cfg))
    first = cfg.read_text()
    assert IP_ARG in first

    p = host.fireroute("config", "b", "--merge", str(cfg), "-o", str(cfg), check=False)
    assert p.returncode == 3 and p.stdout == ""
    assert 'cannot merge vm "b"' in p.stderr and 'for vm "a"' in p.stderr
    assert "--guest-iface" in p.stderr and len(p.stderr.splitlines()) == 1
    assert cfg.read_text() == first

    p = host.fireroute("config", "c", "--merge", str(cfg), "-o", str(cfg))
    merged = json.loads(cfg.read_text())
    assert merged["boot-source"]["boot_args"] == IP_ARG
    assert [i["host_dev_name"] for i in merged["network-interfaces"]] == ["fr-a", "fr-c"]
    assert 'vm "c"' in p.stderr and "fireroute show c --format guest-script" in p.stderr


def test_config_fragment_without_a_file(host: Host, tmp_path):
    host.fireroute("up", "web-1")
    fragment = {
        "network-interfaces": [{"iface_id": "eth0", "guest_mac": MAC, "host_dev_name": "fr-web-1"}],
        "boot-source": {"boot_args": IP_ARG},
    }
    assert json.loads(host.fireroute("config", "web-1").stdout) == fragment
    missing = tmp_path / "new.json"
    p = host.fireroute("config", "web-1", "--merge", str(missing), "-o", str(missing))
    assert "does not exist" in p.stderr
    assert json.loads(missing.read_text()) == fragment


def test_config_entries_are_valid_network_interfaces(host: Host, spec):
    host.fireroute("up", "web-1")
    merged = json.loads(host.fireroute("config", "web-1", "--rx-rate", "1Gbit").stdout)
    schema = spec.definition("NetworkInterface")
    for entry in merged["network-interfaces"]:
        assert spec.errors(entry, schema) == []


# -- show -----------------------------------------------------------------------------------


def test_snapshot_overrides_are_accepted_by_snapshot_load(host: Host, standin_new):
    host.fireroute("up", "web-1")
    overrides = json.loads(host.fireroute("show", "web-1", "--format", "snapshot-overrides").stdout)
    assert overrides == {"network_overrides": [{"iface_id": "eth0", "host_dev_name": "fr-web-1"}]}
    body = {
        "snapshot_path": "/srv/snap/vm.state",
        "mem_backend": {"backend_type": "File", "backend_path": "/srv/snap/vm.mem"},
        **overrides,
    }
    api(standin_new).put("/snapshot/load", body)
    assert standin_new.requests("PUT", "/snapshot/load")[0].body == body


def test_jailer_render(host: Host):
    host.fireroute("up", "web-1", "--owner", "1000:1001")
    p = host.fireroute("show", "web-1", "--format", "jailer")
    assert p.stdout == "--uid 1000 --gid 1001\n"
    assert "--netns" in p.stderr and "host network namespace" in p.stderr
    host.fireroute("up", "web-2")
    p = host.fireroute("show", "web-2", "--format", "jailer")
    assert p.stdout == "" and "owned by root" in p.stderr


def test_guest_script_mmds_route(host: Host):
    host.fireroute("up", "web-1")
    plain = host.fireroute("show", "web-1", "--format", "guest-script").stdout
    assert "169.254" not in plain
    script = host.fireroute("show", "web-1", "--format", "guest-script", "--mmds").stdout
    assert script == plain + "ip route add 169.254.169.254 dev eth0\n"
    other = host.fireroute(
        "show", "web-1", "--format", "guest-script", "--mmds", "--mmds-address", "169.254.170.2"
    ).stdout
    assert other.endswith("ip route add 169.254.170.2 dev eth0\n")


# -- bad input: one line, non-zero, nothing sent, nothing left behind ------------------------

SOCK = "{sock}"
BAD = [
    (["attach", "web-1", "--socket", SOCK, "--rx-rate", "200Mbps"], "invalid --rx-rate"),
    (["attach", "web-1", "--socket", SOCK, "--tx-rate", "0Mbit"], "invalid --tx-rate"),
    (["attach", "web-1", "--socket", SOCK, "--rx-rate", "100"], "invalid --rx-rate"),
    (["attach", "web-1", "--socket", SOCK, "--burst", "10MB"], "--burst needs"),
    (["attach", "web-1", "--socket", SOCK, "--rx-rate", "off", "--burst", "1MB"], "--burst"),
    (["attach", "web-1", "--socket", SOCK, "--rx-rate", "1Mbit", "--burst", "x"], "--burst"),
    (["attach", "web-1", "--socket", SOCK, "--rx-ops", "fast"], "invalid --rx-ops"),
    (["attach", "web-1", "--socket", SOCK, "--tx-ops", "0"], "invalid --tx-ops"),
    (["attach", "web-1", "--socket", SOCK, "--mtu", "10"], "invalid --mtu"),
    (["attach", "web-1", "--socket", SOCK, "--mtu", "big"], "--mtu"),
    (["attach", "web-1", "--socket", SOCK, "--mmds", "--mmds-address", "10.0.0.1"], "MMDS"),
    (["attach", "web-1", "--socket", SOCK, "--mmds-version", "V2"], "needs --mmds"),
    (["attach", "web-1", "--socket", SOCK, "--mmds", "--mmds-version", "V3"], "invalid choice"),
    (["attach", "web-1", "--socket", SOCK, "--iface-id", "bad-id"], "invalid --iface-id"),
    (["attach", "web-1", "--socket", SOCK, "--timeout", "0"], "--timeout"),
    (["attach", "web-1"], "--socket"),
    (["attach", "nope", "--socket", SOCK], "not known"),
    (["limit", "web-1", "--socket", SOCK], "nothing to change"),
    (["limit", "web-1", "--socket", SOCK, "--tx-rate", "off", "--burst", "1MB"], "--burst"),
    (["limit", "web-1", "--socket", SOCK, "--rx-rate", "5 parsecs"], "invalid --rx-rate"),
    (["up", "web-2", "--socket", SOCK, "--rx-rate", "1"], "invalid --rx-rate"),
    (["up", "web-2", "--socket", SOCK, "--mtu", "70000"], "invalid --mtu"),
    (["up", "--count", "2", "--socket", SOCK], "exactly one"),
    (["up", "a", "b", "--socket", SOCK], "exactly one"),
    (["up", "web-2", "--socket", SOCK, "--dry-run"], "--dry-run"),
    (["config", "web-1", "--merge", "{bad_json}"], "bad.json"),
    (["config", "web-1", "--merge", "{list_json}"], "list.json"),
    (["config", "web-1", "--merge", "{tmp}"], "cannot read"),
    (["config", "web-1", "--merge", "{clash_json}"], "already used"),
    (["config", "web-1", "--tx-rate", "fast"], "invalid --tx-rate"),
    (["config", "nope"], "not known"),
    (["show", "web-1", "--format", "json", "--mmds"], "guest-script only"),
    (["show", "web-1", "--format", "guest-script", "--mmds-address", "169.254.1.1"], "--mmds"),
    (
        ["show", "web-1", "--format", "guest-script", "--mmds", "--mmds-address", "1.2.3.4"],
        "MMDS address",
    ),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a[:4]) for a, _ in BAD])
def test_bad_input_one_line(host: Host, standin_new, tmp_path, args, needle):
    host.fireroute("up", "web-1")
    (tmp_path / "bad.json").write_text('{"network-interfaces": [}')
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "clash.json").write_text(
        json.dumps({"network-interfaces": [{"iface_id": "x", "host_dev_name": "fr-web-1"}]})
    )
    values = {
        "sock": standin_new.socket_path,
        "bad_json": str(tmp_path / "bad.json"),
        "list_json": str(tmp_path / "list.json"),
        "clash_json": str(tmp_path / "clash.json"),
        "tmp": str(tmp_path),
    }
    argv = [a.format(**values) for a in args]
    p = host.fireroute(*argv, check=False)
    one_line_error(p, needle)
    assert p.stdout == ""
    assert standin_new.accepted == [] and standin_new.rejected == []
    assert our_taps(host) == ["fr-web-1"] and vms(host) == ["web-1"]
