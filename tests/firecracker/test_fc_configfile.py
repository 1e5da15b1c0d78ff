"""merge_config: golden merges of fireroute's entry into a Firecracker config file."""

from __future__ import annotations

import copy

import pytest

from fireroute.firecracker.configfile import ip_arg_applied, merge_config
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


# -- two VMs in one config: the kernel takes one ip= argument --------------------------------

FIRST = {"iface_id": "eth0", "host_dev_name": "fr-a", "guest_mac": "06:00:ac:10:00:02"}
FIRST_IP = "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"
SECOND = {"iface_id": "net1", "host_dev_name": "fr-b", "guest_mac": "06:00:ac:10:00:06"}


def _first_merged() -> dict:
    return merge_config({"boot-source": {"kernel_image_path": "/k"}}, FIRST, FIRST_IP)


def test_a_second_vm_on_the_same_guest_interface_is_refused_naming_the_first():
    first = _first_merged()
    before = copy.deepcopy(first)
    second_ip = "ip=172.16.0.6::172.16.0.5:255.255.255.252::eth0:off"
    with pytest.raises(ValueError, match=r'configures eth0 for vm "a".*--guest-iface'):
        merge_config(first, SECOND, second_ip, {"fr-a"}, {"172.16.0.2": "a"})
    assert first == before  # nothing of the input changed


def test_a_hand_written_interface_keeps_its_ip_argument_when_one_is_added_beside_it():
    config = {
        "boot-source": {"boot_args": "console=ttyS0 ip=10.0.0.2::10.0.0.1:255.0.0.0::eth0:off"},
        "network-interfaces": [{"iface_id": "mgmt", "host_dev_name": "tapmgmt"}],
    }
    with pytest.raises(ValueError, match="another interface of the config"):
        merge_config(config, SECOND, "ip=172.16.0.6::172.16.0.5:255.255.255.252::eth0:off")


def test_a_second_vm_on_another_guest_interface_is_added_and_the_first_ip_kept():
    # the positive control of the refusal above: the same merge with --guest-iface eth1
    first = _first_merged()
    second_ip = "ip=172.16.0.6::172.16.0.5:255.255.255.252::eth1:off"
    merged = merge_config(first, SECOND, second_ip, {"fr-a"}, {"172.16.0.2": "a"})
    assert merged["network-interfaces"] == [FIRST, SECOND]
    assert merged["boot-source"]["boot_args"] == FIRST_IP
    assert ip_arg_applied(merged, FIRST_IP) and not ip_arg_applied(merged, second_ip)


def test_the_same_vm_merged_again_with_a_new_address_replaces_its_own_ip_argument():
    first = _first_merged()
    moved = "ip=172.16.0.10::172.16.0.9:255.255.255.252::eth0:off"
    merged = merge_config(first, FIRST, moved, {"fr-b"}, {"172.16.0.6": "b"})
    assert merged["boot-source"]["boot_args"] == moved
    assert ip_arg_applied(merged, moved)
