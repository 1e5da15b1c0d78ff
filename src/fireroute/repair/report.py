"""``check``'s report: the diff's operations in words (plan/words.py), grouped as check has
always grouped them: per VM, per shared object (each table of ours in use, the iptables
rules the iptables VMs share), and the orphans (what is tagged for this state file and no
lease accounts for).

What is not an object of ours is said here: a lease that is not active (the store says so),
an uplink that is gone, a CNI attachment whose namespace is gone.
"""

from __future__ import annotations

from fireroute import owner
from fireroute.plan.diff import DELETE, ORPHAN, Op
from fireroute.plan.words import Context, said
from fireroute.repair.picture import Picture
from fireroute.want.objects import FORWARD_KEY
from fireroute.want.shared import nat_member, uses_uplink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.model import Vm

TOP = ("link", "netns", "nft element", "iptables rule")
"""what check has always called an orphan when it is tagged for this state file"""


class Report:
    __slots__ = ("vms", "shared", "orphans")

    def __init__(self) -> None:
        self.vms: dict[str, list[str]] = {}
        self.shared: dict[str, list[str]] = {}
        self.orphans: list[str] = []

    def ok(self) -> bool:
        return not (any(self.vms.values()) or any(self.shared.values()) or self.orphans)

    def as_json(self) -> dict[str, object]:
        """What ``check --json`` prints."""
        return {"ok": self.ok(), "vms": self.vms, "shared": self.shared, "orphans": self.orphans}


def _user(uid: int | None, group: bool) -> str | None:
    """A tap's owner as check names it."""
    if uid is None:
        return None
    return str(uid) if group else f"uid {uid}"


def table_key(family: str, table: str) -> str:
    return f"nftables table {family} {table}"


def _tables(vm: Vm) -> list[tuple[str, str]]:
    """The (family, table)s of ours a VM has elements in."""
    nat = vm.backend == "nft" and nat_member(vm)
    out = [("ip", vm.table)] if nat else []
    out += [("ip6", vm.table)] if nat and vm.net6 is not None else []
    return out + ([("bridge", vm.table)] if vm.mode == "bridge" else [])


class Groups:
    """Where each operation's words go: ``report``'s lists, for the VMs ``shown`` (all, or
    those named: then there are no orphans)."""

    def __init__(self, pic: Picture, shown: list[Vm], named: bool) -> None:
        self.report = Report()
        self.named = named
        self.instance = pic.instance
        self.vms = self.report.vms = {v.name: [] for v in shown}
        self.six = [v.name for v in shown if v.net6 is not None]
        self.members: dict[tuple[str, str], list[str]] = {}
        self.bridged: dict[str, list[str]] = {}
        for v in shown:
            for t in _tables(v):
                self.members.setdefault(t, []).append(v.name)
            if v.mode == "bridge":
                self.bridged.setdefault(str(v.options.bridge), []).append(v.name)
        for family, table in sorted(self.members, key=lambda t: (t[0] != "ip", t[1])):
            if ("nft table", (None, family, table)) in pic.have:
                self.report.shared[table_key(family, table)] = []
        if any(v.backend == "iptables" and nat_member(v) for v in shown):
            self.report.shared["iptables"] = []

    def of_vms(self, names: list[str]) -> list[list[str]]:
        return [self.vms[n] for n in names if n in self.vms]

    def of_shared(self, key: str) -> list[list[str]]:
        return [self.report.shared[key]] if key in self.report.shared else []

    def orphan(self) -> list[list[str]]:
        return [] if self.named else [self.report.orphans]

    def where(self, op: Op) -> list[list[str]]:
        """The lists ``op``'s words go to."""
        obj = op.obj
        if obj.kind == "forwarding":  # (left on: another state file's lease may want it)
            if op.verb == DELETE:
                return []
            six = obj.path != FORWARD_KEY  # type: ignore[attr-defined]
            return self.of_vms(self.six) if six else list(self.vms.values())
        if op.verb == DELETE:
            return self._deleted(op)
        if obj.vm is not None:
            return self.of_vms([obj.vm])
        return self._shared(op)

    def _shared(self, op: Op) -> list[list[str]]:
        """A shared object missing or differing: a table (said by its VMs), its sets and
        chains, the conntrack rule, a bridge and its egress element (said by its VMs)."""
        obj = op.obj
        kind = obj.kind
        if kind == "nft table":
            return self.of_vms(self.members.get(obj.key[1:], []))
        if kind in ("nft set", "nft chain"):
            return self.of_shared(table_key(obj.family, obj.table))  # type: ignore[attr-defined]
        if kind == "iptables rule":
            return self.of_shared("iptables")
        tag = owner.parse(obj.owner)
        bridge = tag[1].removeprefix(owner.BRIDGE) if tag else ""
        return self.of_vms(self.bridged.get(bridge, []))

    def _deleted(self, op: Op) -> list[list[str]]:
        """Something of ours that no lease asks for: this state file's leftovers are orphans
        (said under the VM when VMs are named); what else is in our tables and rules goes
        under the VM whose key it carries, or the table's (or the shared rules')."""
        obj = op.obj
        tag = owner.parse(obj.owner)
        mine = tag is not None and tag[0] == self.instance
        if op.reason == ORPHAN and mine and obj.kind in TOP:
            return self.of_vms([op.who]) if self.named and op.who else self.orphan()
        if op.who is not None and op.who in self.vms:
            return self.of_vms([op.who])
        if obj.kind in ("nft element", "nft set", "nft chain") and not mine:
            return self.of_shared(table_key(obj.family, obj.table))  # type: ignore[attr-defined]
        if obj.kind == "iptables rule" and obj.owner == owner.SHARED:
            return self.of_shared("iptables") or self.orphan()
        return [] if mine and self.named else self.orphan()


def facts(pic: Picture, vm: Vm) -> list[str]:
    """What is wrong with a lease that is no object of ours: its state, its uplink, the
    namespace of a CNI attachment."""
    out = []
    if vm.state != "active":
        out.append(f"lease is {vm.state} (an interrupted run; gc finishes it)")
    links = pic.links()
    if uses_uplink(vm) and vm.uplink not in links:
        out.append(f'uplink "{vm.uplink}" is missing (renamed or gone)')
    if vm.mode == "cni" and vm.netns not in pic.cur.inside:
        out.append(
            f'network namespace "{vm.netns}" cannot be opened from here'
            if vm.tap in links
            else f'network namespace "{vm.netns}" is gone (its runtime removed it: the CNI '
            'DEL or "fireroute gc" removes this attachment)'
        )
    return out


def report(pic: Picture, ops: list[Op], shown: list[Vm], named: bool) -> Report:
    """The report of ``ops`` (the diff of ``pic``) for the VMs ``shown``."""
    g = Groups(pic, shown, named)
    unseen = {v.netns for v in pic.leases if v.mode == "cni" and v.netns not in pic.cur.inside}
    ctx = Context(pic.want, _user, [v.name for v in pic.leases], named)
    ordered = sorted(said(ops, ctx), key=lambda o: o[0].obj.kind == "forwarding")  # (last)
    for op, lines in ordered:
        if op.obj.ns in unseen:
            continue  # (said once: the namespace is gone)
        for where in g.where(op):
            where.extend(lines)
    for r in pic.twice():
        line = f'iptables rules of vm "{r.vm}" in {r.chain} are out of order: "{r.saved}"'
        line += " is there twice"
        for where in g.of_vms([r.vm]):
            where.append(line)
    for vm in shown:
        g.vms[vm.name] += facts(pic, vm)
    return g.report
