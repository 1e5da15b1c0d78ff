"""The guest's side: the kernel ``ip=`` boot argument and an equivalent shell script."""

from __future__ import annotations

from fireroute.model import Vm

DEFAULT_MMDS_ADDRESS = "169.254.169.254"
"""Firecracker's MMDS address when ``PUT /mmds/config`` names none (the route to add in the
guest)."""


def boot_arg(vm: Vm) -> str:
    """``ip=G::T:GM::GI:off`` (kernel nfsroot.txt syntax), DNS servers in the two DNS fields;
    ``ip=:::::GI:dhcp`` for a DHCP guest."""
    o = vm.options
    if vm.guest_ip is None:
        return "ip=" + ":".join(["", "", "", "", "", o.guest_iface, "dhcp"])
    fields = [str(vm.guest_ip), "", str(vm.tap_ip), str(vm.mask), "", o.guest_iface, "off"]
    fields += [str(d) for d in o.dns[:2]]
    return "ip=" + ":".join(fields)


def guest_script(vm: Vm, mmds_address: str | None = None) -> str:
    """What to run inside the guest when it does not take ``ip=`` (the guide's "In the guest").

    With ``mmds_address``, also the route the MMDS guide asks for: MMDS packets go straight
    out of the interface Firecracker serves MMDS on (``ip route add A dev eth0``).
    """
    iface = vm.options.guest_iface
    if vm.guest_ip is None:  # bridge mode with --dhcp
        lines = [f"ip link set {iface} up", f"udhcpc -i {iface} || dhclient {iface}"]
    else:
        lines = [f"ip addr add {vm.guest_ip}/{vm.prefix} dev {iface}", f"ip link set {iface} up"]
        gw = vm.options.gateway
        if vm.mode == "bridge" and gw and vm.options.bridge_address and str(vm.tap_ip) != gw:
            lines.append(f"ip route add {gw} via {vm.tap_ip} dev {iface}")  # the guide's LAN gw
        lines.append(f"ip route add default via {vm.tap_ip} dev {iface}")
    if vm.guest6 is not None:  # (busybox's ip takes no nodad: DAD off for the interface)
        lines += [
            f"echo 0 > /proc/sys/net/ipv6/conf/{iface}/accept_dad",
            f"ip -6 addr add {vm.guest6} dev {iface}",
            f"ip -6 route add default via {vm.gateway6} dev {iface}",
        ]
    if mmds_address is not None:
        lines.append(f"ip route add {mmds_address} dev {iface}")
    if vm.options.dns:
        servers = "\\n".join(f"nameserver {d}" for d in vm.options.dns)
        lines.append(f"printf '{servers}\\n' > /etc/resolv.conf")
    return "\n".join(lines) + "\n"
