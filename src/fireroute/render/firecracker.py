"""The Firecracker side: API body, config-file entry, firectl flag (network-setup guide)."""

from __future__ import annotations

import json

from fireroute.model import Vm


def interface(vm: Vm) -> dict[str, str]:
    """Body of ``PUT /network-interfaces/{iface_id}``; also the config-file entry."""
    return {"iface_id": vm.options.iface_id, "guest_mac": vm.mac, "host_dev_name": vm.tap}


def api_call(vm: Vm, socket: str = "/tmp/firecracker.socket") -> str:
    """The API call as a curl command a person can paste."""
    body = json.dumps(interface(vm), indent=2)
    return (
        f"curl --unix-socket {socket} -i \\\n"
        f"  -X PUT 'http://localhost/network-interfaces/{vm.options.iface_id}' \\\n"
        "  -H 'Accept: application/json' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '{body}'\n"
    )


def config_fragment(vm: Vm) -> dict[str, list[dict[str, str]]]:
    return {"network-interfaces": [interface(vm)]}


def firectl_flag(vm: Vm) -> str:
    return f"--tap-device={vm.tap}/{vm.mac}"
