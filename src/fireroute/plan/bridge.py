"""Bridge mode links (the guide's "Advanced: Bridge-based routing"): a tap enslaved to a bridge.

A bridge fireroute creates carries the owner tag ``fireroute:<state id>:bridge:<name>`` and
goes with the last VM on it (and only when no other link is attached to it); an existing
bridge is adopted: never re-addressed, never removed.
"""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.plan import host
from fireroute.plan.ops import create_steps, delete_step
from fireroute.plan.steps import NFT, Step
from fireroute.want import bridge as want
from fireroute.want import nft as nft_want
from fireroute.want.nft import NftElement, by_set, element_lines
from fireroute.want.tables import FILTER_HEADER, FILTER_RULES

BRIDGE_TAG = owner.BRIDGE
bridge_alias = want.alias


def create_bridge(vm: Vm) -> list[Step]:
    """Make the VM's bridge (undone by deleting it), address it, tag it, bring it up."""
    return create_steps(want.bridge(vm))


def tap_up(vm: Vm) -> list[Step]:
    """Create the tap, attach it to the bridge, tag it, bring it up."""
    return host.tap_up(vm)


def delete_bridge(bridge: str) -> Step:
    from fireroute.want.objects import Link

    return delete_step(Link(bridge, "bridge", "", None, ""))


# -- anti-spoofing on the bridge's ports -------------------------------------------------------
# A table of the ``bridge`` family (same name as the NAT table) checks every frame a guest's tap
# brings into the bridge: its source MAC, and for a guest with a known address (not DHCP) its
# IPv4 and ARP sender addresses. Per-VM data lives in sets, so the rules are constant.
FAMILY = "bridge"
FILTER_SETS = nft_want.FILTER_SETS


def filter_chains() -> dict[str, tuple[str, list[str]]]:
    return {"prerouting": (FILTER_HEADER, list(FILTER_RULES))}


def filter_elements(vm: Vm) -> dict[str, list[str]]:
    """A bridge VM's elements by set, as nft text (what ``check`` expects, ``up`` adds):
    want.nft's objects."""
    return by_set(nft_want.filter_elements(vm))


def _filter_lines(verb: str, table: str, vms: list[Vm]) -> str:
    return _lines(verb, table, _elements(vms))


def _elements(vms: list[Vm]) -> list[NftElement]:
    return [e for vm in vms for e in nft_want.filter_elements(vm)]


def _lines(verb: str, table: str, elems: list[NftElement]) -> str:
    return element_lines(verb, FAMILY, table, elems, nft_want.RANK)


def filter_skeleton(table: str) -> str:
    from fireroute.plan import nft

    return nft.declare(FAMILY, table, FILTER_SETS, filter_chains())


def _filter_sets_only(table: str) -> str:
    from fireroute.plan import nft

    return nft.declare(FAMILY, table, FILTER_SETS)


def filter_remove(table: str, vms: list[Vm]) -> str:
    """Idempotent: declare, add, then delete the VMs' elements."""
    return _removal(table, _elements(vms))


def _removal(table: str, elems: list[NftElement]) -> str:
    return _filter_sets_only(table) + _lines("add", table, elems) + _lines("delete", table, elems)


def filter_up(table: str, vms: list[Vm], fresh: bool) -> Step:
    """The VMs' anti-spoofing elements; ``fresh`` (the table does not exist yet) creates it
    with ``create table`` (failing, and changing nothing, if one appeared meanwhile) and its
    chain; undone by deleting it again. Otherwise only elements are added (and removed on
    undo), so another state file's elements in the table are never touched."""
    vm = vms[0].name if len(vms) == 1 else None
    elems = _elements(vms)
    body = _lines("add", table, elems)
    what = f'add anti-spoofing entries to nftables table "bridge {table}"'
    if fresh:
        undo = Step(
            NFT,
            f"add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n",
            f'delete nftables table "bridge {table}"',
            vm,
        )
        head = f'create table {FAMILY} {table} {{ comment "fireroute"; }}\n' + filter_skeleton(
            table
        )
        return Step(NFT, head + body, what, vm, undo=(undo,), exclusive=True)
    undo = Step(NFT, _removal(table, elems), f'remove anti-spoofing entries of "{table}"', vm)
    return Step(NFT, _filter_sets_only(table) + body, what, vm, undo=(undo,))


def filter_heal(table: str, vms: list[Vm]) -> Step:
    """restore: the table's sets, chain and rules declared again, every element added."""
    return Step(
        NFT,
        filter_skeleton(table) + _filter_lines("add", table, vms),
        f'restore nftables table "bridge {table}"',
    )


def filter_down(table: str, vms: list[Vm], last: bool) -> Step:
    vm = vms[0].name if len(vms) == 1 else None
    if last:
        return Step(
            NFT,
            f"add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n",
            f'delete nftables table "bridge {table}"',
            vm,
        )
    return Step(NFT, filter_remove(table, vms), f'remove anti-spoofing entries of "{table}"', vm)
