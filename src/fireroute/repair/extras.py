"""What fireroute's own tables and rules hold that no lease asks for.

An element of one of our tables is this state file's business when it carries this state
file's tag, when it is keyed on one of its VMs (the VM's tap, its guest or source address:
an allow of 0.0.0.0/0 in a VM's policy set is the VM's whatever its comment says), or when it
carries no state file's tag at all in a table this state file's VMs use. Such an element that
no lease expects where it is, is drift: ``check`` reports it (under the VM whose key it
carries, or as no vm's) and ``restore`` removes it. Elements of another state file's VMs,
carrying its tag, are that file's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from fireroute import owner
from fireroute.model import Vm
from fireroute.plan import bridge, modes, nft
from fireroute.want.iptables import IptRule, conntrack


class Stray(NamedTuple):
    vm: str | None
    """the VM whose key it carries (or whose tag), None for none of ours"""
    family: str
    table: str
    set: str
    value: str
    mine: bool
    """it carries this state file's tag"""

    def words(self) -> str:
        family = "" if self.family == "ip" else f"{self.family} "  # as "lacks" says it
        where = f"{family}{self.table}/{self.set}"
        whose = "" if self.vm else " (no vm)"
        return f"nft set {where} has {self.value}, which no lease asks for{whose}"


def keys(vms: Iterable[Vm]) -> dict[str, str]:
    """Element fields (as nft text) that name a VM: its tap (or host veth), its guest and
    source addresses."""
    out: dict[str, str] = {}
    for v in vms:
        out[f'"{v.tap}"'] = v.name
        for a in (v.guest_ip, v.nat_source if v.mode == "clone" else None):
            if a is not None:
                out[str(a)] = v.name
    return out


def who_fields(set_name: str, value: str) -> list[str]:
    """The fields of an element that can name the VM it belongs to: all of them, but in a
    policy set only the tap (the other field is a destination: another VM's guest address
    there is that VM's policy, not this VM's element)."""
    every = fields(value)
    return every[:1] if set_name.startswith(("out_deny_", "out_allow_")) else every


def fields(value: str) -> list[str]:
    """An element's fields, a map element's value's included."""
    return value.replace(" : ", " . ").split(" . ")


def strays(
    family: str,
    tables: dict[str, dict[str, dict[str, str]]],
    vms: list[Vm],
    members: list[Vm],
    expected: Callable[[Vm], dict[str, list[str]]],
    instance: str,
) -> list[Stray]:
    """The elements of ``tables`` (table -> set -> {element: comment}) that are this state
    file's business and that none of ``members`` (its VMs in that family's tables) expects
    there. ``vms``: all of this state file's VMs (their ``keys``, worked out once an element
    no member expects is found)."""
    want: dict[str, set[tuple[str, str]]] = {}
    for v in members:
        got = want.setdefault(v.table, set())
        for s, vals in expected(v).items():
            got.update((s, val) for val in vals)
    leased = {v.name for v in vms}
    key: dict[str, str] | None = None
    found = []
    for table, sets in tables.items():
        here = want.get(table, set())
        for set_name, elems in sets.items():
            for val, comment in elems.items():
                if (set_name, val) in here:
                    continue
                tag = owner.parse(comment)
                mine = tag is not None and tag[0] == instance
                key = keys(vms) if key is None else key  # (a clean table never asks)
                who = next((key[f] for f in who_fields(set_name, val) if f in key), None)
                if who is None and mine and tag[1] in leased:  # type: ignore[index]
                    who = tag[1]  # type: ignore[index]
                if who is not None or mine or (tag is None and table in want):
                    found.append(Stray(who, family, table, set_name, val, mine))
    return found


def all_strays(
    k_tables: dict[str, dict[str, dict[str, str]]],
    k_btables: dict[str, dict[str, dict[str, str]]],
    vms: list[Vm],
    instance: str,
    nat_expected: Callable[[Vm], dict[str, list[str]]],
) -> list[Stray]:
    """``strays`` of both families of our tables (``nat_expected``: a VM's elements in the
    NAT table)."""
    nat = [v for v in vms if v.backend == "nft" and modes.nat_member(v)]
    bridged = [v for v in vms if v.mode == "bridge"]
    return strays("ip", k_tables, vms, nat, nat_expected, instance) + strays(
        bridge.FAMILY, k_btables, vms, bridged, bridge.filter_elements, instance
    )


def removal(family: str, table: str, found: list[Stray]) -> str:
    """nft commands removing the strays of one table (added first, so that deleting them
    succeeds whether or not they are still there)."""
    by_set: dict[str, list[str]] = {}
    for s in found:
        if s.family == family and s.table == table:
            by_set.setdefault(s.set, []).append(s.value)
    return "".join(
        f"add element {family} {table} {name} {{ {', '.join(vals)} }}\n"
        f"delete element {family} {table} {name} {{ {', '.join(vals)} }}\n"
        for name, vals in sorted(by_set.items())
    )


def extra_sets(family: str, have: Iterable[str]) -> list[str]:
    """Sets and maps in one of our tables that fireroute does not declare there."""
    ours = set(nft.SETS) | set(nft.MAPS) if family == "ip" else set(bridge.FILTER_SETS)
    return sorted(set(have) - ours)


def shared_rules() -> set[str]:
    """The iptables rules every state file's iptables VMs share, as saved (quotes left out)."""
    return {conntrack().saved}


def rule_strays(
    rules: list[IptRule], want: Callable[[str], set[str]], instance: str
) -> list[tuple[str | None, IptRule]]:
    """(vm, rule) of the iptables rules carrying this state file's tag (or the shared tag)
    that no lease asks for; ``want(vm)`` gives a leased VM's rules, as saved (an unleased VM's
    name gives an empty set)."""
    shared = shared_rules()
    found: list[tuple[str | None, IptRule]] = []
    for r in rules:
        if r.owner == owner.SHARED:
            if r.saved not in shared:
                found.append((None, r))
            continue
        tag = owner.parse(r.owner)
        if tag is not None and tag[0] == instance and r.saved not in want(tag[1]):
            found.append((tag[1], r))
    return found
