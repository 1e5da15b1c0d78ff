"""The iptables-nft side of NAT mode: the guide's rules, each tagged with its VM in a comment.

iptables has no sets without ipset, so here the rules are per VM (as the guide writes them,
want/iptables.py), applied in one ``iptables-nft-restore --noflush`` batch (the compiler's
steps, plan/compiler.py). Removal deletes exactly the lines that ``iptables-nft-save`` shows
with our tag, so it is idempotent and never touches foreign rules. Here: the tags, and the
iptables-nft chains and tables fireroute's first rules bring into being.
"""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.want import iptables as want
from fireroute.want.iptables import tag as tag  # (re-exported: repair/order.py reads it)

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


def comment_tag(line: str) -> str | None:
    """The fireroute tag in a saved rule line, if it has one."""
    marker = "--comment "
    at = line.find(marker)
    if at < 0:
        return None
    value = line[at + len(marker) :].split(" ", 1)[0].strip('"')
    return value if value.startswith(TAG) else None
