"""merge_config: golden merges of fireroute's entry into a Firecracker config file."""

from __future__ import annotations

import copy

import pytest

from fireroute.firecracker.configfile import merge_config
from fireroute.firecracker.ratelimit import rate_limiter

IP = "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"
ENTRY = {"iface_id": "eth0", "host_dev_name": "fr-tap0", "guest_mac": "06:00:ac:10:00:02"}

EXISTING = {
    "boot-source": {
        "kernel_image_path": "/srv/vmlinux",
        "boot_args": (
            "console=ttyS0 ip=10.0.0.2::10.0.0.1:255.255.255.252::eth0:off reboot=k panic=1"
        ),
    },
    "drives": [
        {
            "drive_id": "rootfs",
            "path_on_host": "/srv/rootfs.ext4",
            "is_root_device": True,
            "is_read_only": False,
        }
    ],
    "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024},
    "network-interfaces": [
        {"iface_id": "mgmt", "host_dev_name": "tapmgmt"},
        {"iface_id": "eth0", "host_dev_name": "old-tap", "guest_mac": "06:00:00:00:00:01"},
        {"iface_id": "eth2", "host_dev_name": "tap2"},
    ],
}


def test_no_existing_config_gives_a_minimal_fragment():
    assert merge_config(None, ENTRY, IP) == {
        "network-interfaces": [ENTRY],
        "boot-source": {"boot_args": IP},
    }
    assert merge_config(None, ENTRY, None) == {"network-interfaces": [ENTRY]}


def test_replace_in_place_and_keep_everything_else():
    before = copy.deepcopy(EXISTING)
    merged = merge_config(EXISTING, ENTRY, IP)
    assert before == EXISTING  # input untouched
    assert merged == {
        "boot-source": {
            "kernel_image_path": "/srv/vmlinux",
            "boot_args": f"console=ttyS0 {IP} reboot=k panic=1",
        },
        "drives": EXISTING["drives"],
        "machine-config": EXISTING["machine-config"],
        "network-interfaces": [
            {"iface_id": "mgmt", "host_dev_name": "tapmgmt"},
            ENTRY,
            {"iface_id": "eth2", "host_dev_name": "tap2"},
        ],
    }
    assert list(merged) == list(EXISTING)  # key order kept


def test_append_when_new_and_merge_is_idempotent():
    config = {"boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"}}
    once = merge_config(config, ENTRY, IP)
    assert once == {
        "boot-source": {"kernel_image_path": "/k", "boot_args": f"console=ttyS0 {IP}"},
        "network-interfaces": [ENTRY],
    }
    assert merge_config(once, ENTRY, IP) == once


def test_none_ip_removes_ours_but_never_invents_boot_args():
    with_ip = merge_config(EXISTING, ENTRY, IP)
    removed = merge_config(with_ip, ENTRY, None)
    assert removed["boot-source"]["boot_args"] == "console=ttyS0 reboot=k panic=1"
    no_args = {"boot-source": {"kernel_image_path": "/k"}}
    assert merge_config(no_args, ENTRY, None)["boot-source"] == {"kernel_image_path": "/k"}
    assert merge_config(no_args, ENTRY, IP)["boot-source"] == {
        "kernel_image_path": "/k",
        "boot_args": IP,
    }


def test_duplicate_entries_for_the_same_id_collapse():
    config = {"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "a"}] * 2}
    assert merge_config(config, ENTRY, None)["network-interfaces"] == [ENTRY]


def test_tap_already_used_by_another_interface():
    config = {"network-interfaces": [{"iface_id": "net1", "host_dev_name": "fr-tap0"}]}
    with pytest.raises(ValueError, match="tap 'fr-tap0' is already used by interface 'net1'"):
        merge_config(config, ENTRY, IP)


@pytest.mark.parametrize(
    "existing, entry, needle",
    [
        ({"network-interfaces": {}}, ENTRY, "not a list"),
        ({"boot-source": "x"}, ENTRY, "not an object"),
        ({"boot-source": {"boot_args": 5}}, ENTRY, "not a string"),
        (None, {"iface_id": "eth0"}, "host_dev_name"),
        (None, {"host_dev_name": "t", "iface_id": ""}, "iface_id"),
        ([], ENTRY, "JSON object"),
    ],
)
def test_bad_inputs(existing, entry, needle):
    with pytest.raises(ValueError, match=needle):
        merge_config(existing, entry, IP)


def test_merged_config_conforms_to_the_spec(spec):
    entry = {**ENTRY, "rx_rate_limiter": rate_limiter(bandwidth="200Mbit", ops="10000/s")}
    merged = merge_config(EXISTING, entry, IP)
    assert spec.errors(merged, spec.definition("FullVmConfiguration")) == []
