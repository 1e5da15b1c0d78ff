"""Per-mode link steps: the one place that knows how each routing mode wires a VM's device.

The shared NAT table (plan/nft.py, plan/iptables.py) is mode-agnostic: it sees a host device
and a source address (``Vm.tap``, ``Vm.nat_source``).
"""

from __future__ import annotations

from fireroute.model import Vm
from fireroute.plan import host
from fireroute.plan.steps import Step

# bridge and clone are imported where a VM of that mode is met: a NAT VM's command skips them


def nat_member(vm: Vm) -> bool:
    """Does the VM have entries in the shared NAT table/rules? A bridge guest does when its
    address is known: host protection (and masquerade, if asked) are keyed by it."""
    return vm.mode != "bridge" or vm.guest_ip is not None


def masquerading_bridge(vm: Vm) -> bool:
    """A bridge guest routed out of the uplink with masquerade (shared egress per bridge)."""
    return vm.mode == "bridge" and vm.options.masquerade and vm.guest_ip is not None


def uses_uplink(vm: Vm) -> bool:
    """Does the VM's traffic leave through the uplink by fireroute's rules?"""
    return vm.mode != "bridge" or masquerading_bridge(vm)


def links_up(vms: list[Vm], missing_bridges: set[str]) -> list[Step]:
    """Link steps for new VMs; ``missing_bridges`` are created (and owned) first."""
    steps: list[Step] = []
    made: set[str] = set()
    for vm in vms:
        if vm.mode == "bridge":
            from fireroute.plan import bridge

            br = str(vm.options.bridge)
            if br in missing_bridges and br not in made:
                steps += bridge.create_bridge(vm)
                made.add(br)
            steps += bridge.tap_up(vm)
        elif vm.mode == "clone":
            from fireroute.plan import clone

            steps += clone.up(vm)
        elif vm.mode == "cni":
            from fireroute.plan import cni

            steps += cni.up(vm)
    for vm in vms:
        if vm.mode == "nat":
            steps += host.tap_up(vm)
    # after the taps (and CNI host veths) exist; written together
    steps += [host.ipv6_off(vm) for vm in vms if vm.mode in ("nat", "cni")]
    steps += [host.route_localnet(vm) for vm in vms if host.localnet(vm)]
    return steps


def links_down(vms: list[Vm], drop_bridges: set[str]) -> list[Step]:
    """Link steps removing VMs, then the owned bridges no remaining VM uses."""
    own = [v for v in vms if v.mode not in ("clone", "cni")]
    steps = host.taps_down(own) if own else []
    if any(v.mode == "clone" for v in vms):
        from fireroute.plan import clone

        for vm in vms:
            if vm.mode == "clone":
                steps += clone.down(vm)
    if any(v.mode == "cni" for v in vms):
        from fireroute.plan import cni

        attached = [v for v in vms if v.mode == "cni"]
        parts = [cni.down(vm) for vm in attached]  # the namespaces' groups run side by side,
        steps += [s for part in parts for s in part if s.netns is not None]
        steps += [s for part in parts for s in part if s.netns is None]  # then one ip group
    if drop_bridges:
        from fireroute.plan import bridge

        steps += [bridge.delete_bridge(b) for b in sorted(drop_bridges)]
    return steps
