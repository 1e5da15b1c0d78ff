"""Bridge mode links (the guide's "Advanced: Bridge-based routing"): a tap enslaved to a bridge.

A bridge fireroute creates carries the owner tag ``fireroute:<state id>:bridge:<name>`` and
goes with the last VM on it (and only when no other link is attached to it); an existing
bridge is adopted: never re-addressed, never removed.
"""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.plan.host import LINK_GROUP, owner_alias, tuntap_add
from fireroute.plan.steps import IP, Step

BRIDGE_TAG = owner.BRIDGE


def bridge_alias(instance: str, bridge: str) -> str:
    """``fireroute:<state id>:bridge:<name>``: a bridge this state file created."""
    return owner.alias(instance, owner.bridge_name(bridge))


def create_bridge(vm: Vm) -> list[Step]:
    br = vm.options.bridge
    assert br is not None
    undo = Step(IP, f"link del dev {br}", f'delete bridge "{br}"', vm.name)
    steps = [
        Step(IP, f"link add name {br} type bridge", f'create bridge "{br}"', vm.name, undo=(undo,))
    ]
    if vm.options.bridge_address:
        steps.append(
            Step(
                IP,
                f"address add {vm.options.bridge_address} dev {br}",
                f'address bridge "{br}"',
                vm.name,
            )
        )
    steps.append(
        Step(
            IP,
            f"link set dev {br} group {LINK_GROUP} alias {bridge_alias(vm.owner, br)} up",
            f'bring up bridge "{br}"',
            vm.name,
        )
    )
    return steps


def tap_up(vm: Vm) -> list[Step]:
    br = vm.options.bridge
    return [
        tuntap_add(vm),
        Step(
            IP,
            f"link set dev {vm.tap} master {br} group {LINK_GROUP} alias {owner_alias(vm)} up",
            f'attach tap "{vm.tap}" to "{br}"',
            vm.name,
        ),
    ]


def delete_bridge(bridge: str) -> Step:
    return Step(IP, f"link del dev {bridge}", f'delete bridge "{bridge}"')
