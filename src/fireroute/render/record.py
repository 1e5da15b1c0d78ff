"""A VM as JSON-ready data and as the one-screen summary ``up`` and ``show`` print."""

from __future__ import annotations

from fireroute.model import Vm
from fireroute.render import firecracker, guest


def as_dict(vm: Vm) -> dict[str, object]:
    return {
        "name": vm.name,
        "state": vm.state,
        "mode": "nat",
        "backend": vm.backend,
        "tap": vm.tap,
        "tap_ip": str(vm.tap_ip),
        "guest_ip": str(vm.guest_ip),
        "prefix": vm.net.prefixlen,
        "netmask": str(vm.mask),
        "mac": vm.mac,
        "uplink": vm.uplink,
        "table": vm.table,
        "dns": [str(d) for d in vm.options.dns],
        "boot_args": guest.boot_arg(vm),
        "firecracker": firecracker.interface(vm),
    }


def summary(vm: Vm) -> str:
    return (
        f"vm {vm.name}: tap {vm.tap} {vm.tap_ip}/{vm.net.prefixlen}, guest {vm.guest_ip}, "
        f"mac {vm.mac}, {vm.backend} NAT via {vm.uplink}\n"
        f"  boot arg:   {guest.boot_arg(vm)}\n"
        f"  firectl:    {firecracker.firectl_flag(vm)}\n"
    )
