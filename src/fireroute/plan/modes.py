"""What a VM's mode means for the shared objects: is it a NAT member, a masquerading bridge
guest, does its traffic leave through the uplink.

The shared NAT table (plan/nft.py, plan/iptables.py) is mode-agnostic: it sees a host device
and a source address (``Vm.tap``, ``Vm.nat_source``); each mode's links are want/'s objects,
made and removed by the compiler (plan/compiler.py).
"""

from __future__ import annotations

from fireroute.model import Vm


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
