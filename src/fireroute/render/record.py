"""A VM as JSON-ready data and as the one-screen summary ``up`` and ``show`` print."""

from __future__ import annotations

from fireroute.model import Vm
from fireroute.render import firecracker, guest


def as_dict(vm: Vm) -> dict[str, object]:
    return {
        "name": vm.name,
        "state": vm.state,
        "mode": vm.mode,
        "backend": vm.backend,
        "tap": vm.vm_tap,
        "host_dev": vm.tap,
        "tap_ip": str(vm.tap_ip) if vm.tap_ip else None,
        "guest_ip": str(vm.guest_ip) if vm.guest_ip else None,
        "prefix": vm.prefix,
        "netmask": str(vm.mask),
        "mac": vm.mac,
        "uplink": vm.uplink,
        "table": vm.table,
        "owner_tag": vm.tag,
        "dns": [str(d) for d in vm.options.dns],
        "egress": {
            "policy": vm.options.egress,
            "allow_out": [str(n) for n in vm.options.allow_out],
            "deny_out": [str(n) for n in vm.options.deny_out],
        },
        "published": [
            {
                "address": p.addr,
                "port": p.port,
                "guest_port": p.guest_port,
                "protocol": p.proto,
                "spec": str(p),
            }
            for p in vm.options.publish
        ],
        "boot_args": guest.boot_arg(vm),
        "firecracker": firecracker.interface(vm),
        "ipv6": ipv6(vm),
        **_mode_fields(vm),
    }


def ipv6(vm: Vm) -> dict[str, object] | None:
    """A VM's IPv6 as the guest configures it (``ip=`` has none): its address in its /64, the
    gateway (``fe80::1``, the host side of every v6 tap) and the block; None without IPv6."""
    g = vm.guest6
    if g is None:
        return None
    return {
        "address": str(g.ip),
        "prefix": g.network.prefixlen,
        "gateway": str(vm.gateway6),
        "block": str(vm.net6),
    }


def _mode_fields(vm: Vm) -> dict[str, object]:
    if vm.mode == "bridge":
        return {"bridge": vm.options.bridge, "masquerade": vm.options.masquerade}
    if vm.mode == "clone":
        from fireroute.addressing import veth_pair

        assert vm.net is not None  # a clone's lease is its veth link's block
        host_ip, netns_ip = veth_pair(vm.net)
        six = {}
        if vm.net6 is not None:  # (the clone's IPv6 address: its block's ::2)
            from fireroute.addressing import guest6

            six = {"clone_address6": str(guest6(vm.net6).ip)}
        return {
            "netns": vm.netns,
            "clone_address": str(vm.clone_address),
            **six,
            "veth": {"host": vm.tap, "host_ip": str(host_ip), "netns_ip": str(netns_ip)},
        }
    if vm.mode == "cni":
        o = vm.options
        return {
            "netns": vm.netns,
            "container": o.container,
            "ifname": o.ifname,
            "network": o.network,
            "veth": {"host": vm.tap, "netns": o.ifname},
        }
    return {}


def summary(vm: Vm) -> str:
    where = {
        "nat": f"tap {vm.tap} {vm.tap_ip}/{vm.prefix}",
        "bridge": f"tap {vm.tap} on bridge {vm.options.bridge}",
        "clone": f"tap {vm.vm_tap} {vm.tap_ip}/{vm.prefix} in namespace {vm.netns}, "
        f"reachable at {vm.clone_address}",
        "cni": f"tap {vm.vm_tap} in {vm.netns} (container {vm.options.container}, "
        f"{vm.options.ifname} to host veth {vm.tap} {vm.tap_ip}/{vm.prefix})",
    }[vm.mode]
    nat = (
        f"{vm.backend} NAT via {vm.uplink}"
        if vm.mode != "bridge" or vm.options.masquerade
        else "no NAT"
    )
    ports = "".join(
        f"  published:  {p} -> {vm.guest_ip}:{p.guest_port}\n" for p in vm.options.publish
    )
    if vm.guest6 is not None:
        ports += (
            f"  ipv6:       {vm.guest6} via {vm.gateway6} "
            f"(in the guest: fireroute show {vm.name} --format guest-script)\n"
        )
    elif vm.mode == "nat":
        iface = vm.options.guest_iface
        ports += (
            f"  ipv6:       off on the tap; keep the guest from half-enabling it: boot with "
            f"ipv6.disable=1 (or set net.ipv6.conf.{iface}.disable_ipv6=1)\n"
        )
    return (
        f"vm {vm.name}: {where}, guest {vm.guest_ip or 'dhcp'}, "
        f"mac {vm.mac}, {nat}\n"
        f"  boot arg:   {guest.boot_arg(vm)}\n"
        f"  firectl:    {firecracker.firectl_flag(vm)}\n"
        f"{ports}"
    )
