"""A VM's iptables rules (the iptables backend's, and the FORWARD-policy fix of the nft
backend's) as typed objects, one ordered block per VM, and the shared conntrack rule: the one
place that says which rules a VM has. ``up`` adds them, ``check`` expects them as
``iptables-nft-save`` prints them, ``restore`` writes a block again in this order.

iptables judges a packet by the first rule that ends its journey, so the order of a block is
part of what is wanted (plan/diff.py judges it, repair/order.py writes it back in place).
"""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.want.objects import Obj

METADATA = "169.254.169.254"
UNTRACKABLE = "-m conntrack --ctstate INVALID,UNTRACKED"
"""what conntrack could not track: no connection, so no masquerade; a guest's such packet
would leave with its own address (want/nft.py's table drops the same, first)"""
TRACKED = "-m conntrack ! --ctstate INVALID,UNTRACKED"
"""on a guest's ACCEPT too, so that each VM's block is whole by itself: the ACCEPT passes no
untrackable packet whatever stands before it (``restore`` writes a block that lacks a rule
or is out of order again whole, in this order: repair/order.py)"""


class IptRule(Obj):
    """A rule in ``table``'s ``chain``: ``spec`` is its matches and target as
    ``iptables-nft-save`` prints them (the comment unquoted); ``insert`` puts it at the top of
    the chain (``-I``) rather than at the end. Keyed by its saved ``-A`` spelling, which is
    how the kernel shows it whichever way it went in."""

    __slots__ = ("table", "chain", "spec", "insert")
    kind = "iptables rule"

    def __init__(
        self, table: str, chain: str, spec: str, owner: str, vm: str | None, insert: bool = False
    ) -> None:
        self.ns, self.owner, self.vm = None, owner, vm  # (Obj.__init__, inlined: per element)
        self.table = table
        self.chain = chain
        self.spec = spec
        self.insert = insert

    @property
    def saved(self) -> str:
        """``-A CHAIN spec``: the line ``iptables-nft-save`` prints for it."""
        return f"-A {self.chain} {self.spec}"

    @property
    def key(self) -> tuple:
        return (self.table, self.saved)

    def text(self, verb: str) -> str:
        """``create``: ``-A`` (``-I`` for an inserted rule); ``delete``: ``-D``."""
        if verb == "delete":
            return f"-D {self.chain} {self.spec}"
        return f"{'-I' if self.insert else '-A'} {self.chain} {self.spec}"

    def at(self, position: int) -> str:
        """The line inserting it at ``position`` (1-based) of its chain."""
        return f"-I {self.chain} {position} {self.spec}"

    def what(self, verb: str = "create") -> str:
        return f"{'add' if verb == 'create' else 'remove'} iptables rule"


def tag(vm: Vm) -> str:
    """The comment of a VM's rules: ``fireroute:<state id>:<vm>``."""
    return owner.PREFIX + vm.tag


def comment_tag(line: str) -> str | None:
    """The fireroute tag in a saved rule line, if it has one."""
    marker = "--comment "
    at = line.find(marker)
    if at < 0:
        return None
    value = line[at + len(marker) :].split(" ", 1)[0].strip('"')
    return value if value.startswith(owner.PREFIX) else None


def conntrack() -> IptRule:
    """The RELATED,ESTABLISHED accept every state file's iptables VMs share (tagged
    ``fireroute:shared``), above every VM's block in FORWARD."""
    spec = (
        f"-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment {owner.SHARED} -j ACCEPT"
    )
    return IptRule("filter", "FORWARD", spec, owner.SHARED, None)


def block(vm: Vm) -> list[IptRule]:
    """An iptables-backend VM's rules, in the order they must stand in. A NAT or CNI guest's
    source is checked in ``raw`` PREROUTING, before conntrack sees the packet: the shared
    RELATED,ESTABLISHED accept in FORWARD knows no interface, so a neighbour forging a
    guest's address on that guest's established flow would pass it (the ``-s`` of the
    ACCEPT below judges new connections only)."""
    c = f"-m comment --comment {tag(vm)}"
    out: list[IptRule] = []
    who, name = vm.tag, vm.name

    def add(table: str, chain: str, spec: str) -> None:
        out.append(IptRule(table, chain, spec, who, name))

    src = vm.nat_source
    if vm.mode == "bridge":  # a bridge carries other guests too: rules match the address
        br = vm.options.bridge
        if vm.options.masquerade:
            add("nat", "POSTROUTING", f"-s {src}/32 -o {vm.uplink} {c} -j MASQUERADE")
        if not vm.options.allow_metadata:
            add("filter", "FORWARD", f"-s {src}/32 -d {METADATA}/32 -i {br} {c} -j DROP")
        add("filter", "FORWARD", f"-s {src}/32 -i {br} {UNTRACKABLE} {c} -j DROP")
        if vm.options.masquerade:
            add("filter", "FORWARD", f"-s {src}/32 -i {br} -o {vm.uplink} {TRACKED} {c} -j ACCEPT")
        match = f"-s {src}/32 -i {br}"
    else:
        t = vm.tap
        if vm.mode != "clone":  # (a clone's namespace masquerades all it sends: one source)
            add("raw", "PREROUTING", f"! -s {src}/32 -i {t} {c} -j DROP")
        add("nat", "POSTROUTING", f"-s {src}/32 -o {vm.uplink} {c} -j MASQUERADE")
        if not vm.options.allow_metadata:
            add("filter", "FORWARD", f"-d {METADATA}/32 -i {t} {c} -j DROP")
        add("filter", "FORWARD", f"-i {t} {UNTRACKABLE} {c} -j DROP")
        add("filter", "FORWARD", f"-s {src}/32 -i {t} -o {vm.uplink} {TRACKED} {c} -j ACCEPT")
        add("filter", "FORWARD", f"-i {t} {c} -j DROP")
        add("filter", "FORWARD", f"-o {t} {c} -j DROP")  # nothing new towards the guest
        match = f"-i {t}"
    # the guest and the host itself: replies, ping, and the ports allowed; nothing else
    add("filter", "INPUT", f"{match} {UNTRACKABLE} {c} -j DROP")
    add("filter", "INPUT", f"{match} -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT")
    add("filter", "INPUT", f"{match} -p icmp -m icmp --icmp-type 8 {c} -j ACCEPT")
    for port, proto in vm.options.allow_host_ports:
        add("filter", "INPUT", f"{match} -p {proto} -m {proto} --dport {port} {c} -j ACCEPT")
    add("filter", "INPUT", f"{match} {c} -j DROP")
    return out


def policy_fix(vm: Vm) -> list[IptRule]:
    """An nft-backend VM's accepts at the top of iptables-nft's FORWARD chain, for hosts whose
    FORWARD policy is DROP; none for an iptables-backend VM (its block is in that chain, and
    an accept above it would pass what it drops). Each is inserted, so the second ends up
    above the first, as they always have."""
    if vm.backend == "iptables":
        return []
    c = f"-m comment --comment {tag(vm)}"
    related = f"-m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT"
    if vm.mode == "bridge":  # routed traffic arrives on the bridge, not on the tap
        br, ip = vm.options.bridge, vm.guest_ip
        specs = (f"-s {ip}/32 -i {br} {c} -j ACCEPT", f"-d {ip}/32 -o {br} {related}")
    else:
        specs = (f"-i {vm.tap} {c} -j ACCEPT", f"-o {vm.tap} {related}")
    return [IptRule("filter", "FORWARD", s, vm.tag, vm.name, insert=True) for s in specs]


def rules(vm: Vm) -> list[IptRule]:
    """Every iptables rule a VM needs: its block (iptables backend), its policy fix (when
    asked)."""
    out = block(vm) if vm.backend == "iptables" else []
    if vm.options.fix_forward_policy:
        out += policy_fix(vm)
    return out
