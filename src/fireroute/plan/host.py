"""Steps for host links and sysctls (shared by every mode)."""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.plan.ops import (
    create_steps,
    delete_step,
    group_delete_step,
    regroup_step,
    sysctl_step,
)
from fireroute.plan.steps import SYSCTL, Step
from fireroute.want import tap
from fireroute.want.objects import DOOMED_GROUP, FORWARD_KEY, Sysctl, user_args
from fireroute.want.objects import LINK_GROUP as LINK_GROUP  # (re-exported)

ALIAS_PREFIX = owner.PREFIX
owner_alias = tap.alias
localnet = tap.localnet


def owner_args(vm: Vm) -> str:
    """`` user UID [group GID]``: every tap has an owner (root unless ``--owner`` names the
    jailed VMM's user), so no other local user can attach to it through /dev/net/tun."""
    return user_args(*tap.owner_ids(vm))


def tuntap_add(vm: Vm) -> Step:
    """Create the tap (tap mode, one queue, optionally owned by a user); its undo deletes it."""
    return tap_up(vm)[0]


def tap_up(vm: Vm) -> list[Step]:
    """NAT mode: create the tap, address it, tag it, bring it up (bridge mode: create it,
    attach it, tag it, bring it up)."""
    return create_steps([o for o in tap.tap(vm) if not isinstance(o, Sysctl)])


def ipv6_off(vm: Vm) -> Step:
    """No IPv6 on a NAT tap or CNI host veth (``want.tap.ipv6_off``). Goes with the device."""
    return sysctl_step(tap.ipv6_off(vm))


def route_localnet(vm: Vm) -> Step:
    """route_localnet on the VM's host device, for a 127.0.0.1 port. Goes with the device."""
    return sysctl_step(tap.route_localnet(vm))


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
    return [delete_step(tap.link(vm))]


def taps_down(vms: list[Vm]) -> list[Step]:
    """Many taps: regroup them, then one group delete (the kernel batches the unregister)."""
    if len(vms) == 1:
        return tap_down(vms[0])
    steps = [regroup_step(tap.link(vm), DOOMED_GROUP, f'mark tap "{vm.tap}"') for vm in vms]
    steps.append(group_delete_step(DOOMED_GROUP, f"delete {len(vms)} taps"))
    return steps


def set_forwarding(value: str, before: str) -> Step:
    undo = Step(SYSCTL, f"{FORWARD_KEY}={before}", "restore IPv4 forwarding")
    return Step(SYSCTL, f"{FORWARD_KEY}={value}", "set IPv4 forwarding", undo=(undo,))
