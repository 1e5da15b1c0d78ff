"""restore's writing of fireroute's iptables rules in place, in each chain.

iptables judges a packet by the first rule that ends its journey, so a VM's rules are right
only in the order want/iptables.py renders them (its metadata and untrackable DROPs before
its ACCEPT, its catch-all DROP last), and the shared conntrack ACCEPT must come before every
VM's rules (a VM's ``-o <tap>`` DROP would otherwise drop the replies to its guest). The diff
(plan/diff.py) judges that order, and check says it; ``restore`` writes a block that lacks a
rule, holds one twice or is out of order again whole where it stood (deleting its rules and
inserting the rendered block at the place of its first one, in the same
``iptables-nft-restore`` transaction), and the shared rule just above the first VM rule it
must precede. Each VM's rules match only its own tap (or its own address on a bridge), so
the blocks of several VMs may interleave; foreign rules are never moved.
"""

from __future__ import annotations

from fireroute.kernel.read import rule_of
from fireroute.model import Vm
from fireroute.plan.steps import IPTABLES, Step
from fireroute.want import iptables as want
from fireroute.want.iptables import IptRule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

Key = tuple[str, str]
"""(table, chain)"""
SHARED_KEY: Key = ("filter", "FORWARD")


def chain_of(line: str) -> str:
    return line.split(" ", 2)[1]


def chains(rules: list[IptRule]) -> dict[Key, list[str]]:
    """Saved lines (the reader's: comments unquoted, as fireroute renders them) by (table,
    chain), in chain order."""
    out: dict[Key, list[str]] = {}
    for r in rules:
        out.setdefault((r.table, r.chain), []).append(r.saved)
    return out


def index(rules: list[tuple[str, str]]) -> dict[str, dict[Key, list[str]]]:
    """Tagged saved lines by comment tag, then by (table, chain), in chain order."""
    out: dict[str, dict[Key, list[str]]] = {}
    for table, line in rules:
        tag = want.comment_tag(line)
        if tag is not None:
            out.setdefault(tag, {}).setdefault((table, chain_of(line)), []).append(line)
    return out


def rule_blocks(vm: Vm) -> dict[Key, list[IptRule]]:
    """A VM's block (want.iptables), by (table, chain), in its order."""
    out: dict[Key, list[IptRule]] = {}
    for r in want.block(vm):
        out.setdefault((r.table, r.chain), []).append(r)
    return out


def _first(chain: list[str], values: set[str], of: Callable[[str], str | None]) -> int | None:
    """Where the first line of ``chain`` whose ``of`` is one of ``values`` stands."""
    return next((i for i, line in enumerate(chain) if of(line) in values), None)


def heal(
    chains: dict[Key, list[str]],
    tagged: dict[str, dict[Key, list[str]]],
    vms: list[Vm],
    removed: list[IptRule],
) -> list[Step]:
    """Steps putting the shared rule and the blocks of the iptables VMs ``vms`` in place,
    after the rules ``removed`` (strays) are deleted. ``chains``: every saved line by
    (table, chain), foreign ones too (the positions an ``-I`` counts)."""
    sim = {key: list(lines) for key, lines in chains.items()}  # the chains as the batch goes
    for r in removed:
        sim[(r.table, r.chain)].remove(r.saved)
    steps = []
    forward = sim.setdefault(SHARED_KEY, [])
    shared = want.conntrack()
    at = _first(forward, {shared.saved}, lambda line: line)
    first = _first(forward, {want.tag(v) for v in vms}, want.comment_tag)
    if at is None or (first is not None and at > first):
        what = "move shared conntrack rule above the VMs' rules"
        if at is not None:
            gone = rule_of("filter", forward.pop(at))
            steps.append(Step(IPTABLES, gone.text("delete"), what, table="filter"))
        steps.append(_put(forward, first, shared, what))
    for vm in vms:
        mine = tagged.get(want.tag(vm), {})
        for key, rules in rule_blocks(vm).items():
            wanted = [r.saved for r in rules]
            saved = [line for line in mine.get(key, []) if line in wanted]  # (in chain order)
            if saved == wanted:
                continue
            chain = sim.setdefault(key, [])
            at = chain.index(saved[0]) if saved else None
            what = f"write iptables rules of the vm in {key[1]} again, in order"
            for line in saved:
                chain.remove(line)
                text = rule_of(key[0], line).text("delete")
                steps.append(Step(IPTABLES, text, what, vm.name, table=key[0]))
            for i, rule in enumerate(rules):
                steps.append(_put(chain, None if at is None else at + i, rule, what))
    return steps


def _put(chain: list[str], at: int | None, rule: IptRule, what: str) -> Step:
    """Insert ``rule`` at ``at`` (0-based) of ``chain``, or append it: the step and the
    simulated chain."""
    if at is None:
        chain.append(rule.saved)
        text = rule.saved
    else:
        chain.insert(at, rule.saved)
        text = rule.at(at + 1)
    return Step(IPTABLES, text, what, rule.vm, table=rule.table)
