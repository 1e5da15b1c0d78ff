"""The Firecracker verbs of the core (fireroute.firecracker.verbs), called as the Python API and
the daemon call them: plain values in, a report or one fireroute error out, against the
spec-validating stand-in. Each refusal has a positive control beside it: the same call with the
one thing that makes it fail put right succeeds.

The core is a small fake (show/ls/bring_up/take_down) where only the verbs' own logic is under
test; ``test_up_and_attach_in_a_namespace`` runs the real core (fireroute.Host) in a throwaway
network namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Network

import pytest

from fireroute.errors import (
    ConflictError,
    FirecrackerFailed,
    FirerouteError,
    NotFound,
    UsageError,
)
from fireroute.firecracker import verbs
from fireroute.model import Options, Vm
from tests.firecracker.test_cli_integration import api, start

IP_ARG = "ip=172.16.0.6::172.16.0.5:255.255.255.252::eth0:off"
MAC = "06:00:AC:10:00:06"
KERNEL_ARGS = "console=ttyS0 reboot=k panic=1"


def boot_source(standin, boot_args: str = KERNEL_ARGS) -> None:  # (without an ip= of its own)
    api(standin).put("/boot-source", {"kernel_image_path": "/srv/vmlinux", "boot_args": boot_args})


NOT_STARTED = "The requested operation is not supported before starting the microVM."
STARTED = "The requested operation is not supported after starting the microVM."


def make_vm(name: str = "web-1", block: str = "172.16.0.4/30", state: str = "active", **kw) -> Vm:
    tap = f"fr-{name}"
    return Vm(name, IPv4Network(block), tap, MAC, "eth0", Options(**kw), state)


class FakeManager:
    """The part of the core (fireroute.Host) the verbs use. ``bring_up`` brings up ``vm``
    (``changed``: whether this call made it); ``take_down`` records its calls and fails with
    ``down_error`` if set."""

    class Result:
        def __init__(self, vms: list[Vm], changed: bool) -> None:
            self.vms, self.changed, self.warnings = vms, changed, []

    def __init__(self, *vms: Vm, changed: bool = True, down_error: FirerouteError | None = None):
        self.vms = {v.name: v for v in vms}
        self.changed = changed
        self.down_error = down_error
        self.ups: list[tuple[list[str], Options, bool]] = []
        self.downs: list[list[str]] = []

    def show(self, name: str) -> Vm:
        if name not in self.vms:
            raise NotFound(f'vm "{name}" is not known to the state file /fake')
        return self.vms[name]

    def ls(self) -> list[Vm]:
        return list(self.vms.values())

    def bring_up(self, names: list[str], options: Options, *, skip_conflicts: bool = False):
        self.ups.append((names, options, skip_conflicts))
        vm = make_vm(names[0], iface_id=options.iface_id)
        if self.changed or names[0] not in self.vms:
            self.vms[vm.name] = vm
        return self.Result([self.vms[names[0]]], self.changed)

    def take_down(self, names: list[str]):
        self.downs.append(names)
        if self.down_error is not None:
            raise self.down_error
        for n in names:
            self.vms.pop(n, None)
        return [], None


def changes(standin) -> list:
    """What the verbs changed in the stand-in (everything but GETs)."""
    return [(r.method, r.path) for r in standin.accepted if r.method != "GET"]


def mtu_supported(standin) -> bool:
    return tuple(int(x) for x in standin.version.split(".")) >= (1, 16, 0)


# -- AttachRequest and the checks ----------------------------------------------------------


def test_attach_request_builds_the_limiters_and_defaults():
    req = verbs.AttachRequest(
        "/s", rx_rate="200Mbit", tx_rate="100Mbit", burst="10MB", rx_ops="10000/s", mtu=1400
    )
    assert req.rx == {
        "bandwidth": {"size": 25_000_000, "refill_time": 1000, "one_time_burst": 10_000_000},
        "ops": {"size": 10000, "refill_time": 1000},
    }
    assert req.tx == {
        "bandwidth": {"size": 12_500_000, "refill_time": 1000, "one_time_burst": 10_000_000}
    }
    assert (req.socket, req.timeout, req.mtu, req.boot_source) == ("/s", 5.0, 1400, False)
    assert (req.mmds, req.mmds_version, req.mmds_address) == (False, "V2", None)
    plain = verbs.AttachRequest("/s")
    assert (plain.rx, plain.tx, plain.mtu) == (None, None, None)
    mmds = verbs.AttachRequest("/s", mmds=True, mmds_version="V1", mmds_address="169.254.170.2")
    assert (mmds.mmds, mmds.mmds_version, mmds.mmds_address) == (True, "V1", "169.254.170.2")


BAD_REQUESTS = [
    ({"mtu": 10}, "invalid --mtu 10: use 68..65535"),
    ({"mtu": 65536}, "invalid --mtu 65536: use 68..65535"),
    ({"mtu": "1400"}, "invalid --mtu '1400'"),
    ({"mtu": True}, "invalid --mtu True"),
    ({"timeout": 0}, "invalid --timeout 0: use a number of seconds > 0"),
    ({"timeout": 3601}, "invalid --timeout 3601"),
    ({"timeout": "5"}, "invalid --timeout '5'"),
    ({"boot_source": "yes"}, "invalid --boot-source 'yes'"),
    ({"mmds": 1}, "invalid --mmds 1"),
    ({"rx_rate": "200Mbps"}, "invalid --rx-rate"),
    ({"tx_rate": "0Mbit"}, "invalid --tx-rate"),
    ({"tx_ops": "0"}, "invalid --tx-ops"),
    ({"burst": "10MB"}, "--burst needs --rx-rate or --tx-rate"),
    ({"rx_rate": "off", "burst": "1MB"}, "--burst needs a --rx-rate or --tx-rate other than off"),
    ({"rx_rate": "1Mbit", "burst": "x"}, "invalid --burst"),
    ({"mmds_address": "169.254.1.1"}, "--mmds-address needs --mmds"),
    ({"mmds_version": "V2"}, "--mmds-version needs --mmds"),
    ({"mmds": True, "mmds_version": "V3"}, "invalid --mmds-version 'V3': use V1 or V2"),
    ({"mmds": True, "mmds_address": "10.0.0.1"}, "invalid --mmds-address"),
]


@pytest.mark.parametrize("kwargs,needle", BAD_REQUESTS, ids=[str(k) for k, _ in BAD_REQUESTS])
def test_attach_request_refuses_bad_values(kwargs, needle):
    with pytest.raises(UsageError) as err:
        verbs.AttachRequest("/s", **kwargs)
    assert needle in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mtu": 68},
        {"mtu": 65535},
        {"timeout": 3600},
        {"timeout": 0.1},
        {"boot_source": True},
        {"mmds": True},
        {"rx_rate": 1000},
        {"tx_rate": "off"},
        {"tx_ops": 10},
        {"tx_rate": "1Mbit", "rx_rate": "off", "burst": "1MB"},
        {"mmds": True, "mmds_version": "V1", "mmds_address": "169.254.1.1"},
    ],
)
def test_attach_request_takes_the_values_next_to_the_bad_ones(kwargs):
    """Positive control of the refusals above: the edge and neighbour values are taken."""
    verbs.AttachRequest("/s", **kwargs)


def test_attach_request_refuses_a_socket_that_is_no_path():
    with pytest.raises(UsageError, match="invalid --socket None"):
        verbs.AttachRequest(None)  # type: ignore[arg-type]
    from pathlib import Path

    assert verbs.AttachRequest(Path("/run/fc.sock")).socket == "/run/fc.sock"


def test_rate_limiters_sides_and_none():
    assert verbs.rate_limiters() == (None, None)
    rx, tx = verbs.rate_limiters(tx_rate="off")
    assert rx is None and tx == {"bandwidth": {"size": 0, "refill_time": 0}}
    rx, tx = verbs.rate_limiters(rx_ops="500/s")
    assert rx == {"ops": {"size": 500, "refill_time": 1000}} and tx is None
    with pytest.raises(UsageError, match="invalid --rx-ops"):
        verbs.rate_limiters(rx_ops="fast")


def test_check_limits_needs_something_to_change():
    verbs.check_limits({"ops": {"size": 1, "refill_time": 1000}}, None)
    with pytest.raises(UsageError, match="nothing to change"):
        verbs.check_limits(None, None)


def test_active_vm():
    manager = FakeManager(make_vm("web-1"), make_vm("web-2", "172.16.0.8/30", state="pending"))
    assert verbs.active_vm(manager, "web-1").name == "web-1"
    with pytest.raises(ConflictError) as err:
        verbs.active_vm(manager, "web-2")
    assert str(err.value) == (
        'vm "web-2" is not up (state pending); run "fireroute up web-2" first'
    )
    with pytest.raises(NotFound):
        verbs.active_vm(manager, "nope")


def test_iface_id_for():
    vm = make_vm(iface_id="net0")
    assert verbs.iface_id_for(vm) == "net0"
    assert verbs.iface_id_for(vm, "net1") == "net1"
    with pytest.raises(UsageError, match="invalid --iface-id: invalid iface_id 'bad-id'"):
        verbs.iface_id_for(vm, "bad-id")


def test_guest_script_mmds_route():
    plain = verbs.guest_script(make_vm())
    assert "169.254" not in plain
    assert verbs.guest_script(make_vm(), mmds=True) == (
        plain + "ip route add 169.254.169.254 dev eth0\n"
    )
    other = verbs.guest_script(make_vm(), mmds=True, mmds_address="169.254.170.2")
    assert other == plain + "ip route add 169.254.170.2 dev eth0\n"
    with pytest.raises(UsageError, match="--mmds-address needs --mmds"):
        verbs.guest_script(make_vm(), mmds_address="169.254.170.2")
    with pytest.raises(UsageError, match="invalid --mmds-address"):
        verbs.guest_script(make_vm(), mmds=True, mmds_address="1.2.3.4")


# -- attach ---------------------------------------------------------------------------------


def test_attach_sends_the_interface_and_reports_it(standin):
    req = verbs.AttachRequest(standin.socket_path, mtu=1400, tx_rate="1Gbit")
    seen: list[str] = []
    report = verbs.attach(make_vm(), None, req, warn=seen.append)
    expected = {
        "iface_id": "eth0",
        "guest_mac": MAC,
        "host_dev_name": "fr-web-1",
        "tx_rate_limiter": {"bandwidth": {"size": 125_000_000, "refill_time": 1000}},
    }
    if mtu_supported(standin):
        expected["mtu"] = 1400
    assert standin.interfaces["eth0"] == expected
    assert report["socket"] == standin.socket_path
    assert report["interface"] == expected
    assert "boot_args" not in report and "mmds" not in report
    if mtu_supported(standin):
        assert report["mtu_dropped"] is False and report["warnings"] == [] and seen == []
    else:
        warning = (
            f"firecracker {standin.version} has no interface mtu (needs 1.16.0): "
            "--mtu 1400 was not sent"
        )
        assert report["mtu_dropped"] is True
        assert report["warnings"] == [warning] and seen == [warning]
    assert standin.boot_source is None and standin.mmds_config is None
    assert not standin.rejected


def test_attach_boot_args_and_mmds(standin):
    boot_source(standin)
    req = verbs.AttachRequest(standin.socket_path, boot_source=True, mmds=True)
    report = verbs.attach(make_vm(), "net1", req)
    assert standin.interfaces["net1"]["host_dev_name"] == "fr-web-1"
    assert standin.boot_source["boot_args"] == f"{KERNEL_ARGS} {IP_ARG}"
    assert report["boot_args"] == {"ip": IP_ARG, "changed": True}
    assert report["mmds"] == {"version": "V2", "network_interfaces": ["net1"]}
    assert standin.mmds_config == report["mmds"]
    again = verbs.attach(make_vm(), "net1", req)  # idempotent: boot args already there
    assert again["boot_args"] == {"ip": IP_ARG, "changed": False}
    assert standin.mmds_config["network_interfaces"] == ["net1"]
    start(standin)  # a configuration Firecracker boots with
    assert not standin.rejected


def test_attach_mmds_keeps_the_other_interfaces(standin):
    verbs.attach(make_vm(), "mgmt", verbs.AttachRequest(standin.socket_path, mmds=True))
    second = make_vm("web-2", "172.16.0.8/30")
    report = verbs.attach(second, "eth0", verbs.AttachRequest(standin.socket_path, mmds=True))
    assert report["mmds"]["network_interfaces"] == ["mgmt", "eth0"]


def test_attach_boot_source_of_a_second_nic_never_takes_the_first_ones_ip(standin):
    """Two VMs on one Firecracker: the kernel takes one ip= argument. A second VM on the same
    guest interface is refused before anything is sent; on its own guest interface (the
    positive control) its NIC is added, the first ip= kept, and a warning says how to
    configure the second."""
    boot_source(standin)
    req = verbs.AttachRequest(standin.socket_path, boot_source=True)
    verbs.attach(make_vm(), "eth0", req)
    before = changes(standin)
    second = make_vm("web-2", "172.16.0.8/30")
    with pytest.raises(ConflictError, match=r"configures eth0 for another interface"):
        verbs.attach(second, "net1", req)
    assert changes(standin) == before and "net1" not in standin.interfaces
    third = make_vm("web-3", "172.16.0.12/30", guest_iface="eth1")
    seen: list[str] = []
    report = verbs.attach(third, "net2", req, warn=seen.append)
    assert standin.interfaces["net2"]["host_dev_name"] == "fr-web-3"
    assert standin.boot_source["boot_args"] == f"{KERNEL_ARGS} {IP_ARG}"
    assert report["boot_args"] == {"ip": verbs.guest.boot_arg(third), "changed": False}
    assert seen == report["warnings"] and "--format guest-script" in seen[0]


def test_attach_without_a_boot_source_changes_nothing(standin):
    req = verbs.AttachRequest(standin.socket_path, boot_source=True)
    with pytest.raises(FirecrackerFailed) as err:
        verbs.attach(make_vm(), None, req)
    assert err.value.exit_code == 1
    assert str(err.value) == (
        f'cannot attach vm "web-1" to firecracker at {standin.socket_path}: it has no boot '
        "source to merge ip= into (PUT /boot-source first, or leave out --boot-source)"
    )
    assert changes(standin) == []
    boot_source(standin)  # positive control: with the boot source it goes through
    verbs.attach(make_vm(), None, req)
    assert changes(standin)[1:] == [("PUT", "/network-interfaces/eth0"), ("PUT", "/boot-source")]


def test_attach_to_a_firecracker_before_1_0(standin):
    """0.24.4 has no GET /version and no GET /vm/config: the version comes from GET /, the mtu
    is left out with a warning naming it, and what needs /vm/config is refused before anything
    is sent."""
    standin.as_older("0.24.4")
    boot_source(standin)
    for flags, cannot in (
        (
            {"boot_source": True},
            "--boot-source cannot read its boot source to merge ip= into (put the boot_args "
            'of "fireroute show web-1 --json" in your own PUT /boot-source)',
        ),
        ({"mmds": True}, "--mmds cannot read which interfaces already answer MMDS"),
    ):
        with pytest.raises(FirecrackerFailed) as err:
            verbs.attach(make_vm(), None, verbs.AttachRequest(standin.socket_path, **flags))
        assert str(err.value) == (
            f'cannot attach vm "web-1" to firecracker at {standin.socket_path}: firecracker '
            f"0.24.4 has no GET /vm/config, so {cannot}; nothing was sent"
        )
        assert changes(standin) == [("PUT", "/boot-source")]
    report = verbs.attach(make_vm(), None, verbs.AttachRequest(standin.socket_path, mtu=1400))
    assert "mtu" not in standin.interfaces["eth0"]  # positive control: the rest goes through
    assert report["warnings"] == [
        "firecracker 0.24.4 has no interface mtu (needs 1.16.0): --mtu 1400 was not sent"
    ]


def test_attach_passes_firecrackers_fault_on_with_what_was_sent(standin):
    req = verbs.AttachRequest(standin.socket_path)
    boot_source(standin)
    start(standin)
    with pytest.raises(FirecrackerFailed) as err:
        verbs.attach(make_vm(), None, req)
    text = str(err.value)
    assert "firecracker answered 400 to PUT /network-interfaces/eth0: " + STARTED in text
    assert '(sent {"iface_id":"eth0","guest_mac":"06:00:AC:10:00:06",' in text
    assert err.value.exit_code == 1


def test_attach_before_start_is_accepted(standin):
    """Positive control of the fault above: the same request before InstanceStart."""
    boot_source(standin)
    verbs.attach(make_vm(), None, verbs.AttachRequest(standin.socket_path))
    assert "eth0" in standin.interfaces and not standin.rejected


def test_attach_refuses_a_vm_that_is_not_up(standin):
    req = verbs.AttachRequest(standin.socket_path)
    with pytest.raises(ConflictError, match="is not up"):
        verbs.attach(make_vm(state="pending"), None, req)
    with pytest.raises(UsageError, match="invalid --iface-id"):
        verbs.attach(make_vm(), "bad-id", req)
    assert standin.accepted == [] and standin.rejected == []
    verbs.attach(make_vm(), None, req)
    assert changes(standin) == [("PUT", "/network-interfaces/eth0")]


def test_attach_to_a_missing_socket(standin):
    req = verbs.AttachRequest(standin.socket_path + ".missing", timeout=0.5)
    with pytest.raises(FirecrackerFailed, match="cannot reach firecracker API socket"):
        verbs.attach(make_vm(), None, req)


# -- up_and_attach --------------------------------------------------------------------------


def test_up_and_attach_returns_the_vm_and_the_report(standin):
    manager = FakeManager()
    req = verbs.AttachRequest(standin.socket_path)
    options = Options()
    vm, report = verbs.up_and_attach(manager, "web-1", options, req, skip_conflicts=True)
    assert vm.name == "web-1" and manager.vms == {"web-1": vm}
    assert manager.ups == [(["web-1"], options, True)]
    assert report["interface"]["host_dev_name"] == "fr-web-1"
    assert manager.downs == []


def test_up_and_attach_uses_the_iface_id_of_the_options(standin):
    manager = FakeManager()
    req = verbs.AttachRequest(standin.socket_path)
    verbs.up_and_attach(manager, "web-1", Options(iface_id="net7"), req)
    assert list(standin.interfaces) == ["net7"]


def test_refused_put_rolls_the_up_back(standin):
    boot_source(standin)
    start(standin)
    manager = FakeManager()
    req = verbs.AttachRequest(standin.socket_path)
    with pytest.raises(FirecrackerFailed) as err:
        verbs.up_and_attach(manager, "web-1", Options(), req)
    assert STARTED in str(err.value)
    assert str(err.value).endswith("; vm web-1 rolled back (its network removed)")
    assert err.value.exit_code == 1
    assert manager.downs == [["web-1"]] and manager.vms == {}


def test_a_vm_that_was_up_before_is_kept(standin):
    boot_source(standin)
    start(standin)
    manager = FakeManager(make_vm(), changed=False)
    req = verbs.AttachRequest(standin.socket_path)
    with pytest.raises(FirecrackerFailed) as err:
        verbs.up_and_attach(manager, "web-1", Options(), req)
    assert "rolled back" not in str(err.value)
    assert manager.downs == [] and list(manager.vms) == ["web-1"]


def test_a_failed_rollback_says_so(standin):
    req = verbs.AttachRequest(standin.socket_path + ".missing", timeout=0.5)
    undo = FirerouteError("cannot delete tap")
    manager = FakeManager(down_error=undo)
    with pytest.raises(FirecrackerFailed) as err:
        verbs.up_and_attach(manager, "web-1", Options(), req)
    assert "cannot reach firecracker API socket" in str(err.value)
    assert str(err.value).endswith("; rolling back vm web-1 also failed: cannot delete tap")
    assert err.value.exit_code == 1
    assert manager.downs == [["web-1"]]


def test_rollback_keeps_the_exit_code_and_reraises_what_is_no_fireroute_error(standin_old):
    """An MTU warning is reported before the rest of the attach: a warn that raises stands
    for a failure after the PUT (a bad value: exit 2 kept; a bug or ^C: re-raised as is)."""
    req = verbs.AttachRequest(standin_old.socket_path, mtu=1400)

    def refuse(text: str) -> None:
        raise UsageError(f"refused: {text}")

    manager = FakeManager()
    with pytest.raises(FirecrackerFailed) as err:
        verbs.up_and_attach(manager, "web-1", Options(), req, warn=refuse)
    assert err.value.exit_code == 2 and "--mtu 1400 was not sent" in str(err.value)
    assert manager.downs == [["web-1"]]

    def interrupted(text: str) -> None:
        raise KeyboardInterrupt

    manager = FakeManager()
    with pytest.raises(KeyboardInterrupt):
        verbs.up_and_attach(manager, "web-1", Options(), req, warn=interrupted)
    assert manager.downs == [["web-1"]] and manager.vms == {}

    manager = FakeManager()  # positive control: a warn that only listens
    seen: list[str] = []
    verbs.up_and_attach(manager, "web-1", Options(), req, warn=seen.append)
    assert len(seen) == 1 and manager.downs == [] and list(manager.vms) == ["web-1"]


SCRIPT = """
import json, sys
from fireroute.errors import FirerouteError
from fireroute.firecracker import verbs
from fireroute.api import Host
from fireroute.model import Options

state, socket = sys.argv[1:3]
manager = Host(state)
try:
    vm, report = verbs.up_and_attach(manager, "web-1", Options(), verbs.AttachRequest(socket))
    out = {"ok": report["interface"]}
except FirerouteError as exc:
    out = {"error": type(exc).__name__, "text": str(exc), "exit": exc.exit_code}
out["vms"] = [v.name for v in manager.ls()]
print(json.dumps(out))
"""


def up_and_attach_in(host, standin) -> dict:
    """``up_and_attach`` with the real core, run inside the host namespace."""
    p = subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{host.ns}",
            sys.executable,
            "-c",
            SCRIPT,
            str(host.state),
            standin.socket_path,
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.privileged
def test_up_and_attach_in_a_namespace(host, standin):
    """The real Manager: a refused PUT leaves no tap, no state row, no NAT entry; the same
    call to a Firecracker that has not started brings the VM up and attaches it."""
    boot_source(standin)
    start(standin)
    out = up_and_attach_in(host, standin)
    assert out["error"] == "FirecrackerFailed" and out["exit"] == 1
    assert STARTED in out["text"] and "rolled back" in out["text"]
    assert out["vms"] == []
    assert not [n for n in host.links() if n.startswith("fr-")]
    assert "172.16.0.2" not in host.nft_text()

    standin.started = False  # positive control: the VMM before InstanceStart
    out = up_and_attach_in(host, standin)
    assert out["ok"]["host_dev_name"] == "fr-web-1", out
    assert out["vms"] == ["web-1"]
    assert "fr-web-1" in host.links()
    assert standin.interfaces["eth0"]["host_dev_name"] == "fr-web-1"


# -- limit ----------------------------------------------------------------------------------


def attached_and_started(standin) -> None:
    boot_source(standin)
    req = verbs.AttachRequest(standin.socket_path, rx_rate="200Mbit", tx_rate="100Mbit")
    verbs.attach(make_vm(), None, req)
    start(standin)


def test_limit_patches_and_off_removes_a_limit(standin):
    attached_and_started(standin)
    rx, tx = verbs.rate_limiters(rx_rate="50Mbit", tx_rate="off")
    report = verbs.limit(make_vm(), None, standin.socket_path, 5.0, rx, tx)
    assert report == {
        "socket": standin.socket_path,
        "patch": {
            "iface_id": "eth0",
            "rx_rate_limiter": {"bandwidth": {"size": 6_250_000, "refill_time": 1000}},
            "tx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}},
        },
    }
    iface = standin.interfaces["eth0"]
    assert iface["rx_rate_limiter"] == {"bandwidth": {"size": 6_250_000, "refill_time": 1000}}
    assert iface["tx_rate_limiter"] == {}
    assert not standin.rejected


def test_limit_one_side_leaves_the_other(standin):
    attached_and_started(standin)
    rx, tx = verbs.rate_limiters(rx_ops="500/s")
    report = verbs.limit(make_vm(), "eth0", standin.socket_path, 5.0, rx, tx)
    assert "tx_rate_limiter" not in report["patch"]
    assert standin.interfaces["eth0"]["tx_rate_limiter"] == {
        "bandwidth": {"size": 12_500_000, "refill_time": 1000}
    }


def test_limit_before_start_shows_firecrackers_answer(standin):
    boot_source(standin)
    verbs.attach(make_vm(), None, verbs.AttachRequest(standin.socket_path))
    rx, tx = verbs.rate_limiters(rx_ops="500/s")
    with pytest.raises(FirecrackerFailed) as err:
        verbs.limit(make_vm(), None, standin.socket_path, 5.0, rx, tx)
    assert NOT_STARTED in str(err.value)
    assert '"ops":{"size":500,"refill_time":1000}' in str(err.value)
    assert str(err.value).startswith(
        f'cannot change the rate limits of vm "web-1" at {standin.socket_path}: '
    )
    start(standin)  # positive control: the same PATCH after InstanceStart
    verbs.limit(make_vm(), None, standin.socket_path, 5.0, rx, tx)
    assert standin.interfaces["eth0"]["rx_rate_limiter"] == {
        "ops": {"size": 500, "refill_time": 1000}
    }


@pytest.mark.parametrize(
    "vm,iface_id,timeout,rates,error,needle",
    [
        (make_vm(), None, 5.0, {}, UsageError, "nothing to change"),
        (make_vm(), None, 0, {"rx_ops": "5"}, UsageError, "invalid --timeout 0"),
        (make_vm(), "bad-id", 5.0, {"rx_ops": "5"}, UsageError, "invalid --iface-id"),
        (make_vm(state="pending"), None, 5.0, {"rx_ops": "5"}, ConflictError, "is not up"),
    ],
)
def test_limit_refuses_before_sending(standin, vm, iface_id, timeout, rates, error, needle):
    attached_and_started(standin)
    before = list(standin.accepted)
    rx, tx = verbs.rate_limiters(**rates)
    with pytest.raises(error, match=needle):
        verbs.limit(vm, iface_id, standin.socket_path, timeout, rx, tx)
    assert standin.accepted == before and not standin.rejected
    rx, tx = verbs.rate_limiters(rx_ops="5")  # positive control
    verbs.limit(make_vm(), None, standin.socket_path, 5.0, rx, tx)
    assert standin.accepted[-1].method == "PATCH"


# -- config_entry ---------------------------------------------------------------------------

EXISTING = {
    "boot-source": {"kernel_image_path": "/srv/vmlinux", "boot_args": KERNEL_ARGS},
    "network-interfaces": [
        {"iface_id": "mgmt", "host_dev_name": "tapmgmt"},
        {"iface_id": "eth0", "host_dev_name": "old-tap", "guest_mac": "06:00:00:00:00:01"},
    ],
}


def test_config_entry_fragment_without_a_file():
    manager = FakeManager(make_vm())
    assert verbs.config_entry(manager, "web-1", None, None, None, None) == {
        "network-interfaces": [{"iface_id": "eth0", "guest_mac": MAC, "host_dev_name": "fr-web-1"}],
        "boot-source": {"boot_args": IP_ARG},
    }


def test_config_entry_merges_into_an_existing_config():
    manager = FakeManager(make_vm())
    existing = json.loads(json.dumps(EXISTING))
    rx, tx = verbs.rate_limiters(rx_rate="1Gbit")
    merged = verbs.config_entry(manager, "web-1", None, rx, tx, existing)
    assert existing == EXISTING  # not modified
    assert merged["network-interfaces"] == [
        {"iface_id": "mgmt", "host_dev_name": "tapmgmt"},
        {
            "iface_id": "eth0",
            "guest_mac": MAC,
            "host_dev_name": "fr-web-1",
            "rx_rate_limiter": {"bandwidth": {"size": 125_000_000, "refill_time": 1000}},
        },
    ]
    assert merged["boot-source"] == {
        "kernel_image_path": "/srv/vmlinux",
        "boot_args": f"{KERNEL_ARGS} {IP_ARG}",
    }
    net1 = verbs.config_entry(manager, "web-1", "net1", None, None, existing)
    assert [i["iface_id"] for i in net1["network-interfaces"]] == ["mgmt", "eth0", "net1"]


def test_config_entry_refuses_a_tap_that_backs_another_entry():
    manager = FakeManager(make_vm())
    clash = {"network-interfaces": [{"iface_id": "x", "host_dev_name": "fr-web-1"}]}
    with pytest.raises(ConflictError) as err:
        verbs.config_entry(manager, "web-1", None, None, None, clash, source="/srv/vm.json")
    assert str(err.value).startswith('cannot merge vm "web-1" into /srv/vm.json: ')
    assert err.value.exit_code == 3
    with pytest.raises(ConflictError) as err:
        verbs.config_entry(manager, "web-1", None, None, None, clash)
    assert str(err.value).startswith('cannot merge vm "web-1": ')
    # positive control: the same entry under our iface_id is ours to replace
    same = {"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "fr-web-1"}]}
    merged = verbs.config_entry(manager, "web-1", None, None, None, same)
    assert merged["network-interfaces"][0]["guest_mac"] == MAC


def test_config_entry_keeps_another_vms_entry():
    other = make_vm("web-2", "172.16.0.8/30")
    taken = {"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "fr-web-2"}]}
    with pytest.raises(ConflictError, match='cannot merge vm "web-1"'):
        verbs.config_entry(FakeManager(make_vm(), other), "web-1", None, None, None, taken)
    # positive control: without web-2 in the state file, the stale entry is replaced
    merged = verbs.config_entry(FakeManager(make_vm()), "web-1", None, None, None, taken)
    assert merged["network-interfaces"][0]["host_dev_name"] == "fr-web-1"


def test_config_entry_refuses_unknown_names_and_bad_ids():
    manager = FakeManager(make_vm())
    with pytest.raises(NotFound):
        verbs.config_entry(manager, "nope", None, None, None, None)
    with pytest.raises(UsageError, match="invalid --iface-id"):
        verbs.config_entry(manager, "web-1", "a-b", None, None, None)
    assert verbs.config_entry(manager, "web-1", "a_b", None, None, None)  # positive control
