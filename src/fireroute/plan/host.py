"""Steps for host links and sysctls (shared by every mode)."""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.plan.steps import IP, SYSCTL, Step

LINK_GROUP = 4151
"""Interface group of every link fireroute creates: ``ip link del group`` removes many at once."""
DOOMED_GROUP = 4152
"""Links about to be deleted together are moved here first (only ever by fireroute)."""
ALIAS_PREFIX = owner.PREFIX
FORWARD_KEY = "net.ipv4.ip_forward"


def owner_alias(vm: Vm) -> str:
    """The owner tag carried by each link we create for a VM (its ifalias)."""
    return owner.PREFIX + vm.tag


def owner_args(vm: Vm) -> str:
    """`` user UID [group GID]``: every tap has an owner (root unless ``--owner`` names the
    jailed VMM's user), so no other local user can attach to it through /dev/net/tun."""
    o = vm.options.owner
    if o is None:
        return " user 0"
    return f" user {o.uid}" + (f" group {o.gid}" if o.gid is not None else "")


def tuntap_add(vm: Vm) -> Step:
    """Create the tap (tap mode, one queue, optionally owned by a user); its undo deletes it."""
    owner = owner_args(vm)
    delete = Step(IP, f"link del dev {vm.tap}", f'delete tap "{vm.tap}"', vm.name)
    return Step(
        IP,
        f"tuntap add dev {vm.tap} mode tap{owner}",
        f'create tap "{vm.tap}"',
        vm.name,
        undo=(delete,),
    )


def tap_up(vm: Vm) -> list[Step]:
    """NAT mode: create the tap, address it, tag it, bring it up."""
    assert vm.net is not None
    return [
        tuntap_add(vm),
        Step(
            IP,
            f"address add {vm.tap_ip}/{vm.net.prefixlen} dev {vm.tap}",
            f'address tap "{vm.tap}"',
            vm.name,
        ),
        Step(
            IP,
            f"link set dev {vm.tap} group {LINK_GROUP} alias {owner_alias(vm)} up",
            f'bring up tap "{vm.tap}"',
            vm.name,
        ),
    ]


def ipv6_off(vm: Vm) -> Step:
    """No IPv6 on a NAT tap: without it a guest could reach the host over the tap's link-local
    (or any host) IPv6 address, around the IPv4 isolation rules. Goes with the tap."""
    return Step(
        SYSCTL, f"net/ipv6/conf/{vm.tap}/disable_ipv6=1", f'disable IPv6 on "{vm.tap}"', vm.name
    )


def localnet(vm: Vm) -> bool:
    """Has the VM a port published on the host's 127.0.0.1?"""
    return any(p.addr == "127.0.0.1" for p in vm.options.publish)


def route_localnet(vm: Vm) -> Step:
    """A connection to a 127.0.0.1 port is forwarded out of this tap: the kernel routes a
    loopback source out of a device only with route_localnet on it (on this tap alone; the
    NAT table drops a guest's own packets to 127.0.0.0/8). Goes with the tap."""
    return Step(
        SYSCTL,
        f"net/ipv4/conf/{vm.tap}/route_localnet=1",
        f'let "{vm.tap}" carry connections to 127.0.0.1',
        vm.name,
    )


def flush_udp(vm: Vm, ports: list) -> list[Step]:
    """UDP flows to the host ports just published or unpublished: a datagram of a flow that
    began before would go on to where that flow went (conntrack keeps its path)."""
    from fireroute.plan.steps import CONNTRACK

    steps = []
    for p in ports:
        if p.proto != "udp":
            continue
        at = f" --orig-dst {p.addr}" if p.addr else ""
        steps.append(
            Step(
                CONNTRACK,
                f"-D -p udp{at} --orig-port-dst {p.port}",
                f"forget UDP flows to port {p.port}",
                vm.name,
            )
        )
    return steps


def tap_down(vm: Vm) -> list[Step]:
    return [Step(IP, f"link del dev {vm.tap}", f'delete tap "{vm.tap}"', vm.name)]


def taps_down(vms: list[Vm]) -> list[Step]:
    """Many taps: regroup them, then one group delete (the kernel batches the unregister)."""
    if len(vms) == 1:
        return tap_down(vms[0])
    steps = [
        Step(IP, f"link set dev {vm.tap} group {DOOMED_GROUP}", f'mark tap "{vm.tap}"', vm.name)
        for vm in vms
    ]
    steps.append(Step(IP, f"link del group {DOOMED_GROUP}", f"delete {len(vms)} taps"))
    return steps


def set_forwarding(value: str, before: str) -> Step:
    undo = Step(SYSCTL, f"{FORWARD_KEY}={before}", "restore IPv4 forwarding")
    return Step(SYSCTL, f"{FORWARD_KEY}={value}", "set IPv4 forwarding", undo=(undo,))
