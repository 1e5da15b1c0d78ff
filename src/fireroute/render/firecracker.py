"""The Firecracker side: API body, config-file entry, firectl flag (network-setup guide)."""

from __future__ import annotations

from fireroute import jsontext
from fireroute.model import Vm


def interface(vm: Vm) -> dict[str, object]:
    """Body of ``PUT /network-interfaces/{iface_id}``; also the config-file entry."""
    return {"iface_id": vm.options.iface_id, "guest_mac": vm.mac, "host_dev_name": vm.vm_tap}


def api_call(vm: Vm, socket: str = "/tmp/firecracker.socket") -> str:
    """The API call as a curl command a person can paste."""
    body = jsontext.dumps(interface(vm), indent=2)
    return (
        f"curl --unix-socket {socket} -i \\\n"
        f"  -X PUT 'http://localhost/network-interfaces/{vm.options.iface_id}' \\\n"
        "  -H 'Accept: application/json' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '{body}'\n"
    )


def config_fragment(vm: Vm) -> dict[str, object]:
    return {"network-interfaces": [interface(vm)]}


def firectl_flag(vm: Vm) -> str:
    return f"--tap-device={vm.vm_tap}/{vm.mac}"


def snapshot_overrides(vm: Vm, iface_id: str | None = None) -> dict[str, list[dict[str, str]]]:
    """The ``network_overrides`` part of a ``PUT /snapshot/load`` body (spec v1.16.1
    ``NetworkOverride``: ``iface_id`` + ``host_dev_name``): restore a snapshot taken with
    another tap onto this VM's tap. ``iface_id`` is the interface's id in the snapshot
    (default: this VM's). Firecracker 1.11 has no ``network_overrides``."""
    return {
        "network_overrides": [
            {"iface_id": iface_id or vm.options.iface_id, "host_dev_name": vm.vm_tap}
        ]
    }


def jailer_args(vm: Vm) -> tuple[list[str], list[str]]:
    """The jailer arguments that depend on this VM's networking, and notes explaining them.

    NAT and bridge modes put the tap in the host namespace, so there is no ``--netns``; clone
    mode's tap lives in the clone's namespace, passed as ``--netns``. An unprivileged
    Firecracker can only open a tap owned by its uid (or group): with ``up --owner UID[:GID]``
    the tap is made for that user, and ``--uid``/``--gid`` must match.
    """
    args: list[str] = []
    if vm.netns_path is not None:
        args += ["--netns", vm.netns_path]
        whose = "the CNI attachment's" if vm.mode == "cni" else "the clone's"
        notes = [f'tap "{vm.vm_tap}" lives in {whose} network namespace "{vm.netns}"']
    else:
        notes = [
            f'tap "{vm.tap}" lives in the host network namespace ({vm.mode} mode): do not pass '
            "--netns; run the jailer in the namespace the tap is in"
        ]
    owner = vm.options.owner
    if owner is None:
        notes.append(
            f'tap "{vm.tap}" is owned by root (no --owner): a jailed Firecracker with an '
            f"unprivileged --uid cannot open it; recreate it with "
            f'"fireroute down {vm.name}" and "fireroute up {vm.name} --owner UID:GID"'
        )
        return args, notes
    args += ["--uid", str(owner.uid)]
    if owner.gid is not None:
        args += ["--gid", str(owner.gid)]
        notes.append(f'tap "{vm.tap}" is owned by uid {owner.uid}, group {owner.gid}')
    else:
        notes.append(
            f'tap "{vm.tap}" is owned by uid {owner.uid} (no group): any --gid works, the '
            "kernel checks the uid"
        )
    return args, notes
