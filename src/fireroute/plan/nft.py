"""The nftables side of NAT mode: one table of ours, constant rules, per-VM data in sets.

Adding or removing VMs only changes set elements (the compiler's steps, plan/compiler.py); a
new table is declared whole. Here: the table's text (its skeleton, as a table of the layout
is declared), and a running VM's egress-policy or published-port change.
"""

from __future__ import annotations

from fireroute.model import Vm
from fireroute.plan.steps import NFT, Step
from fireroute.want import nft as want
from fireroute.want.nft import (  # noqa: F401 (the layout, where plans and checks read it)
    MAPS,
    RANK,
    SETS,
    SHARDS,
    NftElement,
    by_set,
    cidr_text,
    egress_cidrs,
    element_lines,
    shard,
)
from fireroute.want.tables import (  # noqa: F401 (the layout, where plans and checks read it)
    ALL_PARTS,
    CHAINS,
    HEADERS,
    JUMP,
    JUMP_RULE,
    METADATA,
    OPTIONAL,
    PARTS,
    POLICY_SETS,
    PORT_MAPS,
    PUBLISH,
    PUBLISHING,
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


def _parts_head(table: str, names: set[str], parts: frozenset[str]) -> str:
    """The sets and maps ``names`` and the ``parts`` declared (with the forward chain's rules
    again, the @out_jump one among them, if ``jump`` is one): what a VM that needs parts
    declares in a table that has VMs (idempotent: whether or not the table has them yet)."""
    sets, maps = layout(parts)
    declared = {c: v for c, v in chains(parts).items() if OPTIONAL.get(c) in parts}
    if JUMP in parts:
        declared["forward"] = chains(parts)["forward"]
    return declare(
        "ip",
        table,
        {n: k for n, k in sets.items() if n in names or OPTIONAL.get(n) in parts},
        declared,
        {n: k for n, k in maps.items() if n in names or OPTIONAL.get(n) in parts},
    )


def elements(vm: Vm) -> dict[str, list[str]]:
    """A VM's elements in the NAT table, by set, as ``nft list`` prints them (less the
    comment): want.nft's objects, as ``stats`` and the sweep compare them."""
    return by_set(want.elements(vm))


def _sets_only(table: str, names: set[str]) -> str:
    """The table and the sets and maps ``names`` (those element lines write), declared
    (idempotent): what a later VM's transaction declares. The rest of the skeleton is left
    alone: re-declaring all sets and maps of the table on every VM cost the kernel and nft a
    few ms each time."""
    sets = {n: k for n, k in SETS.items() if n in names}
    return declare("ip", table, sets, maps={n: k for n, k in MAPS.items() if n in names})


def _replace(table: str, old: Vm, new: Vm, names: tuple[str, ...], what: str) -> Step | None:
    """One transaction: of the VM's elements of ``names``, those its new options no longer
    have deleted (added first, so that deleting them succeeds whether or not they were there)
    and those they newly have added; the elements both have are left alone, because the kernel
    finds an interval set's element to delete by a walk over the set (one delete at 750
    ranges costs ~11 ms, an add 0.3: bench/interval_set.py). None when nothing changes."""

    have = [e for e in want.elements(old) if e.set in names]
    wanted = [e for e in want.elements(new) if e.set in names]
    had, wants = {(e.set, e.value) for e in have}, {(e.set, e.value) for e in wanted}
    gone = [e for e in have if (e.set, e.value) not in wants]
    come = [e for e in wanted if (e.set, e.value) not in had]
    if not gone and not come:
        return None
    rank = {n: i for i, n in enumerate(names)}

    def lines(verb: str, of: list[NftElement]) -> str:
        return element_lines(verb, "ip", table, of, rank)

    body = lines("add", gone) + lines("delete", gone) + lines("add", come)
    written, parts = {e.set for e in gone + come}, parts_of(e.set for e in come)
    head = _parts_head(table, written, parts) if parts else _sets_only(table, written)
    script = head + body
    return Step(NFT, script, f'change the {what} of vm "{new.name}"', new.name)


def policy_change(table: str, old: Vm, new: Vm) -> Step | None:
    return _replace(table, old, new, POLICY_SETS, "egress policy")


def ports_change(table: str, old: Vm, new: Vm) -> Step | None:
    return _replace(table, old, new, PORT_MAPS, "published ports")
