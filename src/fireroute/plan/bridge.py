"""Bridge mode links (the guide's "Advanced: Bridge-based routing"): a tap enslaved to a bridge.

A bridge fireroute creates carries the owner tag ``fireroute:bridge:<name>`` and goes with the
last VM on it; an existing bridge is adopted: never re-addressed, never removed.
"""

from __future__ import annotations

from fireroute.model import Vm
from fireroute.plan.host import ALIAS_PREFIX, LINK_GROUP, owner_alias, tuntap_add
from fireroute.plan.steps import IP, Step

BRIDGE_TAG = "bridge:"


def bridge_alias(bridge: str) -> str:
    return ALIAS_PREFIX + BRIDGE_TAG + bridge


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
            f"link set dev {br} group {LINK_GROUP} alias {bridge_alias(br)} up",
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
            f"link set dev {vm.tap} master {br} group {LINK_GROUP} alias {owner_alias(vm.name)} up",
            f'attach tap "{vm.tap}" to "{br}"',
            vm.name,
        ),
    ]


def delete_bridge(bridge: str) -> Step:
    return Step(IP, f"link del dev {bridge}", f'delete bridge "{bridge}"')
