"""The iptables-nft side of NAT mode: the guide's rules, each tagged with its VM in a comment.

iptables has no sets without ipset, so here the rules are per VM (as the guide writes them),
applied in one ``iptables-nft-restore --noflush`` batch. Removal deletes exactly the lines that
``iptables-nft-save`` shows with our tag, so it is idempotent and never touches foreign rules.
"""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.plan.steps import IPTABLES, Step

TAG = owner.PREFIX
SHARED = owner.SHARED
METADATA = "169.254.169.254"
CONNTRACK = (
    f"-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment {SHARED} -j ACCEPT"
)

UNTRACKABLE = "-m conntrack --ctstate INVALID,UNTRACKED"
"""what conntrack could not track: no connection, so no masquerade; a guest's such packet
would leave with its own address (plan/nft.py drops the same, first)"""
TRACKED = "-m conntrack ! --ctstate INVALID,UNTRACKED"
"""on a guest's ACCEPT too, so that each VM's block is whole by itself: the ACCEPT passes no
untrackable packet whatever stands before it (``restore`` writes a block that lacks a rule
or is out of order again whole, in this order: repair/order.py)"""


def tag(vm: Vm) -> str:
    """The comment of a VM's rules: ``fireroute:<state id>:<vm>``."""
    return owner.PREFIX + vm.tag


def vm_rules(vm: Vm) -> list[tuple[str, str]]:
    """(table, rule) pairs for one VM, in iptables-save's own spelling."""
    c = f"-m comment --comment {tag(vm)}"
    src = vm.nat_source
    if vm.mode == "bridge":  # a bridge carries other guests too: rules match the guest's address
        return _bridge_rules(vm, c)
    rules = [("nat", f"-A POSTROUTING -s {src}/32 -o {vm.uplink} {c} -j MASQUERADE")]
    t = vm.tap
    if not vm.options.allow_metadata:
        rules.append(("filter", f"-A FORWARD -d {METADATA}/32 -i {t} {c} -j DROP"))
    rules += [
        ("filter", f"-A FORWARD -i {t} {UNTRACKABLE} {c} -j DROP"),
        ("filter", f"-A FORWARD -s {src}/32 -i {t} -o {vm.uplink} {TRACKED} {c} -j ACCEPT"),
        ("filter", f"-A FORWARD -i {t} {c} -j DROP"),
        ("filter", f"-A FORWARD -o {t} {c} -j DROP"),  # nothing new towards the guest
    ]
    return rules + _host_rules(f"-i {t}", vm, c)


def _host_rules(match: str, vm: Vm, c: str) -> list[tuple[str, str]]:
    """The guest and the host itself: replies, ping, and the ports allowed; nothing else."""
    rules = [
        ("filter", f"-A INPUT {match} {UNTRACKABLE} {c} -j DROP"),
        ("filter", f"-A INPUT {match} -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT"),
        ("filter", f"-A INPUT {match} -p icmp -m icmp --icmp-type 8 {c} -j ACCEPT"),
    ]
    for port, proto in vm.options.allow_host_ports:
        rules.append(
            ("filter", f"-A INPUT {match} -p {proto} -m {proto} --dport {port} {c} -j ACCEPT")
        )
    rules.append(("filter", f"-A INPUT {match} {c} -j DROP"))
    return rules


def _bridge_rules(vm: Vm, c: str) -> list[tuple[str, str]]:
    """A bridge guest with a known address (the bridge table keeps it from using another):
    masquerade out of the uplink if asked, no metadata address unless allowed, host
    protection as for a NAT guest."""
    src, br = vm.nat_source, vm.options.bridge
    rules = []
    if vm.options.masquerade:
        rules.append(("nat", f"-A POSTROUTING -s {src}/32 -o {vm.uplink} {c} -j MASQUERADE"))
    if not vm.options.allow_metadata:
        rules.append(("filter", f"-A FORWARD -s {src}/32 -d {METADATA}/32 -i {br} {c} -j DROP"))
    rules.append(("filter", f"-A FORWARD -s {src}/32 -i {br} {UNTRACKABLE} {c} -j DROP"))
    if vm.options.masquerade:
        rules.append(
            ("filter", f"-A FORWARD -s {src}/32 -i {br} -o {vm.uplink} {TRACKED} {c} -j ACCEPT")
        )
    return rules + _host_rules(f"-s {src}/32 -i {br}", vm, c)


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


def vms_up(vms: list[Vm], need_conntrack: bool) -> list[Step]:
    steps = []
    if need_conntrack:
        undo = Step(IPTABLES, _delete(CONNTRACK), "remove shared conntrack rule", table="filter")
        steps.append(
            Step(IPTABLES, CONNTRACK, "add shared conntrack rule", undo=(undo,), table="filter")
        )
    for vm in vms:
        for table, rule in vm_rules(vm):
            undo = Step(IPTABLES, _delete(rule), "remove iptables rule", vm.name, table=table)
            steps.append(
                Step(IPTABLES, rule, "add iptables rule", vm.name, undo=(undo,), table=table)
            )
    return steps


def forward_policy_fix(vms: list[Vm]) -> list[Step]:
    """Tagged ACCEPTs at the top of iptables-nft's FORWARD chain for the VMs' devices, for
    hosts whose FORWARD policy is DROP (an accept in fireroute's nft table does not end the
    packet's journey through that chain). None for the iptables backend's VMs: their own
    rules are in that chain already, and an accept above them would pass what they drop
    (forged sources, untracked packets)."""
    steps = []
    for vm in vms:
        if vm.backend == "iptables":
            continue
        c = f"-m comment --comment {tag(vm)}"
        if vm.mode == "bridge":  # routed traffic arrives on the bridge, not on the tap
            br, ip = vm.options.bridge, vm.guest_ip
            rules: tuple[str, ...] = (
                f"-I FORWARD -s {ip}/32 -i {br} {c} -j ACCEPT",
                f"-I FORWARD -d {ip}/32 -o {br} -m conntrack --ctstate RELATED,ESTABLISHED "
                f"{c} -j ACCEPT",
            )
        else:
            rules = (
                f"-I FORWARD -i {vm.tap} {c} -j ACCEPT",
                f"-I FORWARD -o {vm.tap} -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT",
            )
        for rule in rules:
            undo = Step(
                IPTABLES, _delete(rule), "remove FORWARD-policy fix", vm.name, table="filter"
            )
            steps.append(
                Step(
                    IPTABLES,
                    rule,
                    "accept in iptables-nft FORWARD",
                    vm.name,
                    undo=(undo,),
                    table="filter",
                )
            )
    return steps


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
