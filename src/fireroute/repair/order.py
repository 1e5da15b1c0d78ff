"""The order of fireroute's iptables rules in each chain.

iptables judges a packet by the first rule that ends its journey, so a VM's rules are right
only in the order want/iptables.py renders them (its metadata and untrackable DROPs before
its ACCEPT, its catch-all DROP last), and the shared conntrack ACCEPT must come before every
VM's rules (a VM's ``-o <tap>`` DROP would otherwise drop the replies to its guest). ``check``
compares each VM's block, chain by chain, with the rendered one; ``restore`` writes a block
that lacks a rule or is out of order again whole where it stood (deleting its rules and
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


def blocks(vm: Vm) -> dict[Key, list[str]]:
    """The same, as saved (``-A``) lines."""
    return {key: [r.saved for r in rules] for key, rules in rule_blocks(vm).items()}


def _present(have: list[str], rules: list[IptRule]) -> list[str]:
    """Of the saved lines ``have``, those that are ``rules``, in chain order."""
    wanted = {r.saved for r in rules}
    return [p for p in have if p in wanted]


def disorder(present: list[str], want: list[str]) -> str | None:
    """Why ``present`` (rules of ``want``, in chain order) is not in ``want``'s order, or None."""
    rank = {r: i for i, r in enumerate(want)}
    for before, after in zip(present, present[1:], strict=False):
        if rank[after] == rank[before]:
            return f'"{after}" is there twice'
        if rank[after] < rank[before]:
            return f'"{after}" comes after "{before}"'
    return None  # (strictly rising ranks: no rule twice)


def vm_problems(tagged: dict[str, dict[Key, list[str]]], vm: Vm) -> list[str]:
    """One line per chain in which an iptables VM's rules are out of the rendered order."""
    mine = tagged.get(want.tag(vm), {})
    problems = []
    for key, rules in rule_blocks(vm).items():
        why = disorder(_present(mine.get(key, []), rules), [r.saved for r in rules])
        if why:
            problems.append(f'iptables rules of vm "{vm.name}" in {key[1]} are out of order: {why}')
    return problems


def _first_vm_rule(chain: list[str], tags: set[str]) -> int | None:
    for i, line in enumerate(chain):
        if want.comment_tag(line) in tags:
            return i
    return None


def _shared_at(chain: list[str]) -> int | None:
    rule = want.conntrack().saved
    return next((i for i, line in enumerate(chain) if line == rule), None)


def shared_problem(chains: dict[Key, list[str]], vms: list[Vm]) -> str | None:
    """The shared conntrack ACCEPT, present but below a rule of the iptables VMs ``vms``."""
    chain = chains.get(SHARED_KEY, [])
    at = _shared_at(chain)
    first = _first_vm_rule(chain, {want.tag(v) for v in vms})
    if at is None or first is None or at < first:
        return None
    rule = want.conntrack().saved
    return f'shared iptables rule is out of order: "{rule}" comes after "{chain[first]}"'


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
    at = _shared_at(forward)
    first = _first_vm_rule(forward, {want.tag(v) for v in vms})
    if at is None or (first is not None and at > first):
        what = "move shared conntrack rule above the VMs' rules"
        if at is not None:
            gone = rule_of("filter", forward.pop(at))
            steps.append(Step(IPTABLES, gone.text("delete"), what, table="filter"))
        steps.append(_put(forward, first, want.conntrack(), what))
    for vm in vms:
        mine = tagged.get(want.tag(vm), {})
        for key, rules in rule_blocks(vm).items():
            present = _present(mine.get(key, []), rules)
            if present == [r.saved for r in rules]:
                continue
            chain, wanted = sim.setdefault(key, []), {r.saved for r in rules}
            saved = [line for line in mine.get(key, []) if line in wanted]
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
