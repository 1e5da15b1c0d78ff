"""The iptables-nft side of NAT mode: the guide's rules, each tagged with its VM in a comment.

iptables has no sets without ipset, so here the rules are per VM (as the guide writes them),
applied in one ``iptables-nft-restore --noflush`` batch. Removal deletes exactly the lines that
``iptables-nft-save`` shows with our tag, so it is idempotent and never touches foreign rules.
"""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.plan.steps import IPTABLES, Step
from fireroute.want import iptables as want
from fireroute.want.iptables import (  # noqa: F401 (where plans and checks read them)
    METADATA,
    TRACKED,
    UNTRACKABLE,
    IptRule,
    tag,
)

TAG = owner.PREFIX
SHARED = owner.SHARED
CONNTRACK = want.conntrack().saved


def vm_rules(vm: Vm) -> list[tuple[str, str]]:
    """(table, rule) pairs for one VM, in iptables-save's own spelling: want.iptables's
    block."""
    return [(r.table, r.saved) for r in want.block(vm)]


IPT_MADE = "ipt_made"
"""state meta: the iptables-nft tables and chains fireroute's first iptables rules brought into
being (JSON list of "table" and "table/chain"), removed again with its last rules"""
USED = {"filter": ("INPUT", "FORWARD"), "nat": ("POSTROUTING",)}
"""the tables and chains fireroute's iptables rules go into"""


def would_make(before: dict[str, set[str]]) -> list[str]:
    """Of the tables and chains fireroute's rules use, those that do not exist yet."""
    made = []
    for table, chains in USED.items():
        if table not in before:
            made.append(table)
        made += [f"{table}/{c}" for c in chains if c not in before.get(table, set())]
    return made


def cleanup(made: list[str], remaining: list[tuple[str, str]], now: dict[str, set[str]]) -> str:
    """nft commands removing what ``would_make`` recorded, once fireroute's last rules are
    gone: a chain only if no rule (anyone's) is left in it, a table only if every chain left
    in it is one of those. Empty string when there is nothing to remove."""
    busy = {(t, line.split()[1]) for t, line in remaining}
    gone: set[tuple[str, str]] = set()
    lines = []
    for item in made:
        table, _, chain = item.partition("/")
        if chain and chain in now.get(table, set()) and (table, chain) not in busy:
            lines.append(f"delete chain ip {table} {chain}\n")
            gone.add((table, chain))
    for item in made:
        if "/" not in item and item in now and {(item, c) for c in now[item]} <= gone:
            lines.append(f"delete table ip {item}\n")
    return "".join(lines)


def _delete(rule: str) -> str:
    return "-D" + rule[2:]


def _steps(rules: list[IptRule], what: str, undo_what: str) -> list[Step]:
    """Each rule's line, undone by its delete."""
    return [
        Step(
            IPTABLES,
            r.text("create"),
            what,
            r.vm,
            undo=(Step(IPTABLES, r.text("delete"), undo_what, r.vm, table=r.table),),
            table=r.table,
        )
        for r in rules
    ]


def vms_up(vms: list[Vm], need_conntrack: bool) -> list[Step]:
    steps = []
    if need_conntrack:
        shared = want.conntrack()
        steps += _steps([shared], "add shared conntrack rule", "remove shared conntrack rule")
    rules = [r for vm in vms for r in want.block(vm)]
    return steps + _steps(rules, "add iptables rule", "remove iptables rule")


def forward_policy_fix(vms: list[Vm]) -> list[Step]:
    """Tagged ACCEPTs at the top of iptables-nft's FORWARD chain for the VMs' devices, for
    hosts whose FORWARD policy is DROP (an accept in fireroute's nft table does not end the
    packet's journey through that chain): want.iptables's ``policy_fix``."""
    return policy_fix_steps([r for vm in vms for r in want.policy_fix(vm)])


def policy_fix_steps(rules: list[IptRule]) -> list[Step]:
    return _steps(rules, "accept in iptables-nft FORWARD", "remove FORWARD-policy fix")


def rules_down(present: list[tuple[str, str]], tags: set[str], last: bool) -> list[Step]:
    """Delete the saved lines (table, ``-A ...``) tagged for the VM tags ``tags``
    (``<state id>:<vm>``), and the shared one when ``last``."""
    steps = []
    for table, line in present:
        found = comment_tag(line)
        if found is None:
            continue
        vm_tag = found[len(TAG) :]
        if vm_tag in tags or (last and found == SHARED):
            steps.append(
                Step(
                    IPTABLES,
                    _delete(line),
                    "remove iptables rule",
                    vm_tag.partition(":")[2] if vm_tag in tags else None,
                    table=table,
                )
            )
    return steps


def comment_tag(line: str) -> str | None:
    """The fireroute tag in a saved rule line, if it has one."""
    marker = "--comment "
    at = line.find(marker)
    if at < 0:
        return None
    value = line[at + len(marker) :].split(" ", 1)[0].strip('"')
    return value if value.startswith(TAG) else None
