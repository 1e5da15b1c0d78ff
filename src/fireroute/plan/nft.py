"""The nftables side of NAT mode: one table of ours, constant rules, per-VM data in sets.

Adding or removing VMs only changes set elements (the compiler's steps, plan/compiler.py); a
new table is declared whole. Here: the table's text (its skeleton, as a table of the layout
is declared), and a VM's elements by set, as ``stats`` and the sweep compare them (a running
VM's egress-policy or published-port change is change.py's).
"""

from __future__ import annotations

from fireroute.model import Vm
from fireroute.want import nft as want
from fireroute.want.nft import (  # noqa: F401 (the layout, where checks and tests read it)
    MAPS,
    SETS,
    SHARDS,
    by_set,
    shard,
)
from fireroute.want.tables import (  # noqa: F401 (the layout, where checks and tests read it)
    ALL_PARTS,
    CHAINS,
    HEADERS,
    JUMP,
    JUMP_RULE,
    OPTIONAL,
    RULES,
    TABLE_COMMENT,
    parts_of,
)


def chains(parts: frozenset[str] = ALL_PARTS) -> dict[str, tuple[str, list[str]]]:
    """The desired chains of a NAT table holding ``parts``: name -> (header, rules)."""
    return {
        c: (HEADERS[c], [r for ch, r in RULES if ch == c and (r != JUMP_RULE or JUMP in parts)])
        for c in CHAINS
        if c not in OPTIONAL or OPTIONAL[c] in parts
    }


def layout(parts: frozenset[str] = ALL_PARTS) -> tuple[dict[str, str], dict[str, str]]:
    """The sets and the maps of a NAT table holding ``parts``."""

    def keep(n: str) -> bool:
        return n not in OPTIONAL or OPTIONAL[n] in parts

    return {n: k for n, k in SETS.items() if keep(n)}, {n: k for n, k in MAPS.items() if keep(n)}


def declare_chain(name: str, header: str) -> str:
    return f"  chain {name} {{ {header} }}\n" if header else f"  chain {name} {{ }}\n"


def declare(
    family: str,
    table: str,
    sets: dict[str, str],
    chains: dict[str, tuple[str, list[str]]] | None = None,
    maps: dict[str, str] | None = None,
) -> str:
    """A table of ours declared with its sets and, given ``chains``, its chains (flushed)
    and their rules: the same text for the NAT table and the bridge family's one."""
    body = "".join(f"  set {name} {{ type {kind}; }}\n" for name, kind in sets.items())
    body += "".join(f"  map {name} {{ type {kind}; }}\n" for name, kind in (maps or {}).items())
    body += "".join(declare_chain(c, header) for c, (header, _rules) in (chains or {}).items())
    text = f'table {family} {table} {{\n  comment "{TABLE_COMMENT}"\n{body}}}\n'
    for c in chains or {}:
        text += f"flush chain {family} {table} {c}\n"
    for c, (_header, rules) in (chains or {}).items():
        text += "".join(f"add rule {family} {table} {c} {r}\n" for r in rules)
    return text


def skeleton(table: str, parts: frozenset[str] = ALL_PARTS) -> str:
    sets, maps = layout(parts)
    return declare("ip", table, sets, chains(parts), maps)


def elements(vm: Vm) -> dict[str, list[str]]:
    """A VM's elements in the NAT table, by set, as ``nft list`` prints them (less the
    comment): want.nft's objects, as ``stats`` and the sweep compare them."""
    return by_set(want.elements(vm))
