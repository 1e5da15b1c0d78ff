"""A bridge fireroute makes for its bridge-mode VMs: the link (tagged
``fireroute:<state id>:bridge:<name>``) and the address ``--bridge-address`` gives it. A bridge
found in place is adopted instead: never addressed, never removed."""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.want.objects import Addr, Link, Obj


def alias(instance: str, bridge: str) -> str:
    """``fireroute:<state id>:bridge:<name>``: a bridge this state file created."""
    return owner.alias(instance, owner.bridge_name(bridge))


def link(vm: Vm) -> Link:
    """The bridge ``vm`` is a port of, as the state file holding ``vm`` would make it."""
    br = str(vm.options.bridge)
    tag = owner.tag(vm.owner, owner.bridge_name(br))
    return Link(br, "bridge", tag, vm.name, alias(vm.owner, br))


def bridge(vm: Vm) -> list[Obj]:
    """The bridge and its address (if one is asked for), in creation order."""
    br = link(vm)
    given = vm.options.bridge_address
    return [br, *([Addr(br, str(given))] if given else [])]
