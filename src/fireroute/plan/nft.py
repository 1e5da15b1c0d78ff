"""The nftables side of NAT mode: one table of ours, constant rules, per-VM data in sets.

Adding or removing VMs only changes set elements; the table skeleton is re-declared in the same
transaction (idempotent), so a missing or damaged table heals on the next ``up``.
"""

from __future__ import annotations

from fireroute import owner
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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


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


def _own(vms: list[Vm]) -> list[NftElement]:
    return [e for vm in vms for e in want.elements(vm)]


def _element_lines(verb: str, table: str, elems: list[NftElement]) -> str:
    return element_lines(verb, "ip", table, elems, RANK)


def bridge_egress(verb: str, table: str, bridges: set[tuple[str, str, str]]) -> str:
    """The shared (bridge . uplink) egress elements of masquerading bridges, given as
    (bridge, uplink, state id)."""
    elems = [want.egress_element(table, b, u, i) for b, u, i in sorted(bridges)]
    return _element_lines(verb, table, elems)


def _sets_only(table: str, names: set[str]) -> str:
    """The table and the sets and maps ``names`` (those element lines write), declared
    (idempotent): what a later VM's transaction declares. The rest of the skeleton is left
    alone: re-declaring all sets and maps of the table on every VM cost the kernel and nft a
    few ms each time."""
    sets = {n: k for n, k in SETS.items() if n in names}
    return declare("ip", table, sets, maps={n: k for n, k in MAPS.items() if n in names})


def remove_elements(
    table: str, vms: list[Vm], bridges: set[tuple[str, str, str]] | None = None
) -> str:
    """Idempotent removal: declaring the sets and adding first makes the delete succeed
    whether or not the elements (or the table) still exist."""
    return _removal(table, _own(vms), bridges)


def _removal(
    table: str, own: list[NftElement], bridges: set[tuple[str, str, str]] | None = None
) -> str:
    egress = bridge_egress("add", table, bridges or set())
    body = (
        _element_lines("add", table, own)
        + egress
        + _element_lines("delete", table, own)
        + bridge_egress("delete", table, bridges or set())
    )
    return _sets_only(table, {e.set for e in own} | ({"egress"} if egress else set())) + body


def vms_up(table: str, vms: list[Vm], fresh: bool = True, exclusive: bool = False) -> Step:
    """Add the VMs' set elements. ``fresh`` (no VM of ours in the table yet) also declares the
    chains and their rules; otherwise only the table and sets are re-declared (idempotent and
    ~8x cheaper for the kernel than re-registering the base chains), and the parts (PARTS) the
    VMs need that a table may lack yet. ``exclusive`` starts with
    ``create table``: the transaction fails, changing nothing, if a table of that name exists
    (then the caller reads whose it is), so a new table needs no read beforehand."""
    vm = vms[0].name if len(vms) == 1 else None
    elems = [e for v in vms for e in want.nat_elements(v)]
    own = [e for e in elems if e.vm is not None]
    if fresh:  # the table is ours and had no VM: undoing means removing it again
        undo = Step(
            NFT,
            f"add table ip {table}\ndelete table ip {table}\n",
            f'delete nftables table "{table}"',
            vm,
        )
    else:
        undo = Step(NFT, _removal(table, own), f'remove NAT entries from table "{table}"', vm)
    shared = {(e.value, e.owner): e for e in elems if e.vm is None}  # one per bridge
    body = _element_lines("add", table, own) + _element_lines(
        "add", table, [shared[k] for k in sorted(shared)]
    )
    names = {e.set for e in elems}
    parts = parts_of(names)
    if fresh:  # a table made here holds what its VMs need; one that may exist, every part
        # (it may be another state file's, whose VMs need what these do not)
        head = skeleton(table, parts if exclusive else ALL_PARTS)
    else:
        head = _parts_head(table, names, parts) if parts else _sets_only(table, names)
    if exclusive:
        head = f'create table ip {table} {{ comment "{TABLE_COMMENT}"; }}\n' + head
    what = f'add NAT entries to nftables table "{table}"'
    return Step(NFT, head + body, what, vm, undo=(undo,), exclusive=exclusive)


def vms_down(
    table: str, vms: list[Vm], last: bool, drop_bridges: set[tuple[str, str, str]] | None = None
) -> Step:
    """Remove the VMs' elements (and the egress of bridges no VM uses any more), or the whole
    table with the last VM."""
    vm = vms[0].name if len(vms) == 1 else None
    if last:
        script = f"add table ip {table}\ndelete table ip {table}\n"
        return Step(NFT, script, f'delete nftables table "{table}"', vm)
    return Step(
        NFT,
        remove_elements(table, vms, drop_bridges),
        f'remove NAT entries from table "{table}"',
        vm,
    )


def sweep_tables(
    family: str,
    tables: dict[str, dict[str, dict[str, str]]],
    users: list[Vm],
    expected: Callable[[Vm], dict[str, list[str]]],
    instance: str,
) -> list[Step]:
    """Removing what the state file ``instance`` left in one family's tables (as observed:
    table -> set -> {element: comment}): a table that none of ``users`` (its VMs that stay)
    is in and that holds nothing of another state file's goes; elsewhere its elements that no
    staying VM expects go. gc passes the active VMs, teardown none."""
    steps = []
    for table, sets in tables.items():
        mine = {
            s: [v for v, c in elems.items() if (owner.parse(c) or ("",))[0] == instance]
            for s, elems in sets.items()
        }
        in_table = [v for v in users if v.table == table]
        if not in_table and all(len(mine[s]) == len(sets[s]) for s in sets):
            steps.append(
                Step(
                    NFT,
                    f"delete table {family} {table}\n",
                    f'delete unused nftables table "{family} {table}"',
                )
            )
            continue
        keep = {(s, val) for v in in_table for s, vals in expected(v).items() for val in vals}
        for set_name, vals in mine.items():
            stale = [val for val in vals if (set_name, val) not in keep]
            if stale:
                body = ", ".join(stale)
                steps.append(
                    Step(
                        NFT,
                        f"add element {family} {table} {set_name} {{ {body} }}\n"
                        f"delete element {family} {table} {set_name} {{ {body} }}\n",
                        f'remove leftover elements from "{family} {table}"',
                    )
                )
    return steps
