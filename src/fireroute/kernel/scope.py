"""read(scope) for up, down and teardown (docs/core-migration.md, section 5): what is there
as a verb's diff needs it, as an index (``current``): the recorded objects (the leases
rendered) and the kernel read only where the verb's scope says so.

- up reads forwarding (IPv6's too when a VM with IPv6 wants it), the shared iptables rule
  (iptables-save), the bridges it joins, and a bridge-family table the state file's other
  VMs do not have (its owner);
- down reads only at thresholds: the last VM on a bridge, in a table (ip, ip6, bridge), with
  iptables rules, of the file (forwarding), with IPv6 of the file (IPv6 forwarding);
- teardown reads the whole host (kernel/read.py) and takes what is tagged for the file.

What the reads find also brings the steps a diff cannot say (the nft chains fireroute's
first iptables rules made) and the records that go with the plan (:attr:`Read.forget`).
"""

from __future__ import annotations

from fireroute.errors import ConflictError, MissingTool
from fireroute.kernel import observe
from fireroute.kernel.apply import read_sysctl
from fireroute.kernel.run import which
from fireroute.plan.steps import NFT, Step
from fireroute.want.objects import FORWARD6_KEY, FORWARD_KEY, Forwarding
from fireroute.want.shared import (
    BRIDGE,
    NAT,
    NAT6,
    Population,
    masquerading_bridge,
    nat_member,
    shared,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Protocol

    from fireroute.kernel.read import Source
    from fireroute.kernel.run import Runner
    from fireroute.model import Vm
    from fireroute.plan.steps import Plan
    from fireroute.want.iptables import IptRule
    from fireroute.want.objects import Obj

    Index = dict[tuple, Obj]

    class Records(Protocol):
        """What the reads take from the state file (state/store.py ``Store``)."""

        def instance(self) -> str: ...
        def meta(self, key: str) -> str | None: ...
        def shapes(self) -> list: ...  # noqa: E704


FORWARD_BEFORE = "ip_forward_before"
FORWARDING = ("forwarding", (None, FORWARD_KEY))
FORWARD_RECORD = "host:ip_forward"
"""in ``Plan.forget``: the namespace's forwarding record (kernel/forwarding.py) is obsolete
once the plan ran, if forwarding then has the recorded value"""
FORWARD6_BEFORE = "ip6_forward_before"
FORWARDING6 = ("forwarding", (None, FORWARD6_KEY))
FORWARD6_RECORD = "host:ip6_forward"
"""IPv6 forwarding's: the state file's record, its key, the namespace's record in ``forget``"""

PACKAGES = {
    "ip": "iproute2",
    "tc": "iproute2",
    "nft": "nftables",
    "nsenter": "util-linux",
    "conntrack": "conntrack",
}
"""the package a missing tool comes in (else: iptables)"""


class Read:
    """A verb's scope as read: ``current`` (what is there), ``desired`` (what is wanted: the
    VMs that stay, or with up's), the steps the diff cannot say (``cleanup``: before
    forwarding's), the records the plan makes obsolete (``forget``) or makes (``meta``);
    up's: ``forwarding`` as read (``forwarding6``: IPv6's, when wanted), the shared elements
    another guest's up added (``held``)."""

    __slots__ = (
        *("current", "desired", "cleanup", "forget", "meta", "forwarding", "forwarding6"),
        "held",
    )

    def __init__(self, current: Index, desired: Index | None = None) -> None:
        self.current = current
        self.desired: Index = desired or {}
        self.cleanup: list[Step] = []
        self.forget: list[str] = []
        self.meta: dict[str, str] = {}
        self.forwarding = ""
        self.forwarding6 = ""
        self.held: set[tuple] = set()


def require_tools(backend: str, mode: str = "nat", udp_ports: bool = False) -> None:
    """The programs a request's plan runs are installed (else: the package to install)."""
    tools = (
        ["ip", "nft"] if backend == "nft" else ["ip", "iptables-nft-restore", "iptables-nft-save"]
    )
    if mode == "cni":
        tools += ["tc", "nsenter"]
    if udp_ports:
        tools.append("conntrack")
    for tool in tools:
        if which(tool) is None:
            pkg = PACKAGES.get(tool, "iptables")
            raise MissingTool(f"{tool} not found: install the {pkg} package")


def forwarding() -> str:
    """net.ipv4.ip_forward as it is."""
    return read_sysctl(FORWARD_KEY)


def forwarding6() -> str:
    """net.ipv6.conf.all.forwarding as it is."""
    return read_sysctl(FORWARD6_KEY)


def done(plan: Plan) -> None:
    """After a plan ran: drop the host-wide records it made obsolete."""
    from fireroute.kernel import forwarding as record

    if FORWARD_RECORD in plan.forget:
        before = record.recorded()
        if before is not None and forwarding() == before:
            record.forget()
    if FORWARD6_RECORD in plan.forget:
        before = record.recorded(record.V6)
        if before is not None and forwarding6() == before:
            record.forget(record.V6)
        from fireroute.kernel import uplink6

        uplink6.give_back()  # (the uplink's accept_ra, once IPv6 forwarding is off again)
    unproxied = [
        a.obj.dev  # type: ignore[attr-defined]
        for s in plan.steps
        for a in getattr(s, "ops", ())
        if a.obj.kind == "neigh proxy" and a.verb == "delete"
    ]
    if unproxied:  # (the uplink's proxy_ndp, once its last proxy entry went)
        from fireroute.kernel import uplink6
        from fireroute.kernel.run import run

        uplink6.give_back_proxy(run, unproxied)


# -- up ------------------------------------------------------------------------------------------


def up(
    records: Records, runner: Runner, vms: list[Vm], shape: Population, missing: set[str]
) -> Read:
    """The shared objects of the other VMs' ``shape`` as present (the new VMs' own objects
    absent: a reservation cannot hold an existing device), with what up reads (forwarding,
    the shared iptables rule, the bridges; ``missing``: those to make), and what the shape
    with ``vms`` wants."""
    from fireroute.want import render

    instance = records.instance()
    read = Read(
        render.desired([], shape, instance), render.desired(vms, _joined(shape, vms), instance)
    )
    current = read.current
    read.forwarding = forwarding()
    if FORWARDING not in current and records.meta(FORWARD_BEFORE) is None:
        read.meta[FORWARD_BEFORE] = read.forwarding  # the first VM of all
    current[FORWARDING] = Forwarding(read.forwarding)
    if FORWARDING6 in read.desired:  # (a VM with IPv6: read only then)
        read.forwarding6 = forwarding6()
        if FORWARDING6 not in current and records.meta(FORWARD6_BEFORE) is None:
            read.meta[FORWARD6_BEFORE] = read.forwarding6  # the first v6 VM of the file
        current[FORWARDING6] = Forwarding(read.forwarding6, path=FORWARD6_KEY)
    if any(v.backend == "iptables" and nat_member(v) for v in vms):
        recorded = records.meta(IPT_MADE)
        made = made_record(recorded, up_iptables(current, runner, recorded))
        if made:  # what its rules bring in: remembered, to go with the last rule
            read.meta[IPT_MADE] = made
    read.held = up_bridges(current, read.desired, vms, missing)
    gateway6_found(current, read.desired, vms, missing, runner)
    born(current, read.desired, vms)
    if any(masquerading_bridge(v) for v in vms):
        read.held |= egress_found(current, read.desired, read.held, runner)
    return read


def born(current: Index, desired: Index, vms: list[Vm]) -> None:
    """The per-device IPv6 sysctls a link of the root namespace that ``up`` makes has from
    birth, in ``current`` (so the diff writes only those that differ): ``disable_ipv6`` as
    the namespace's default has it, and ``addr_gen_mode`` 1 when the line that brings it up
    says ``addrgenmode none``. At 4000 VMs with IPv6 these were 8000 writes, the
    ``addr_gen_mode`` ones dear (each makes the kernel add the device's multicast route
    beside every other tap's: bench/RESULTS.md section 17). A kernel without IPv6 has no
    default to read: every such sysctl is written, as before."""
    from fireroute.want.objects import Link, Sysctl
    from fireroute.want.tap import ADDR_GEN6, DISABLE6

    names = {v.name for v in vms}
    made = [
        o
        for o in desired.values()
        if isinstance(o, Link) and o.ns is None and o.vm in names and o.link_kind in ("tun", "veth")
    ]
    try:
        default = read_sysctl(DISABLE6.format("default"))
    except OSError:
        return
    for link in made:
        mode = "1" if link.addrgen == "none" else None  # (IN6_ADDR_GEN_MODE_NONE)
        for form, value in ((DISABLE6, default), (ADDR_GEN6, mode)):
            want = desired.get(("sysctl", (None, form.format(link.name))))
            if value is not None and isinstance(want, Sysctl):
                current[("sysctl", want.key)] = Sysctl(want.path, value, "", link.owner, link.vm)


def _joined(shape: Population, vms: list[Vm]) -> Population:
    """``shape`` with ``vms`` counted in."""
    out = Population.of(vms)
    for k, n in shape.counts.items():
        out.counts[k] = out.counts.get(k, 0) + n
    return out


def up_iptables(current: Index, runner: Runner, recorded: str | None = None) -> list[str]:
    """The shared conntrack rule as iptables-nft-save shows it (there or not) in ``current``;
    the tables and chains fireroute's rules use that are not there yet (its rules bring them
    in: the first rule of all, or a chain an earlier version's rules did not use), as the
    same iptables-nft-save shows them, or nft where it cannot tell (:func:`saved_chains`).
    ``recorded``: the ``IPT_MADE`` record, whose items may be listed or not."""
    from fireroute.want.iptables import comment_tag, conntrack

    rule = conntrack()
    present, shown, unreadable, mixed = observe.iptables_save(runner)
    if unreadable:  # (its rules unseen: ours could not be found)
        raise ConflictError(
            f'iptables table "{unreadable[0]}" holds what iptables-nft cannot read (written '
            "with nft): fireroute's iptables backend cannot use it (use --backend nft)"
        )
    odd_chains = [t for t in USED if t in mixed or "-" in _policies(shown, t)]
    foreign = observe.foreign_chains(odd_chains, runner) if odd_chains else []
    if foreign:  # (iptables-nft-restore would commit the tables before it, then fail)
        raise ConflictError(
            f'nftables chain "{foreign[0]}" is not the base chain iptables-nft makes (written '
            "with nft): fireroute's iptables backend cannot add to it (use --backend nft)"
        )
    if any(comment_tag(line) == rule.owner for _, line in present):
        current[(rule.kind, rule.key)] = rule
    else:
        current.pop((rule.kind, rule.key), None)
    before = saved_chains(shown, present, recorded)
    return would_make(observe.nft_ip_chains(runner) if before is None else before)


def _policies(shown: dict[str, dict[str, str]], table: str) -> list[str]:
    """The policies iptables-nft-save shows for the chains fireroute's rules use in
    ``table`` (``-`` for a regular chain of that name)."""
    return [shown.get(table, {}).get(c, "") for c in USED[table]]


def saved_chains(
    shown: dict[str, dict[str, str]], rules: list[tuple[str, str]], recorded: str | None
) -> dict[str, set[str]] | None:
    """The tables and chains iptables-nft-save's headers (``shown``) and ``rules`` prove
    there, for :func:`would_make` (as :func:`observe.nft_ip_chains` would give them), or None
    when a table or chain fireroute's rules use may be there or not: iptables-nft-save prints
    every built-in chain of a table that exists, there or not, so one with policy ACCEPT and no
    rule is either; a table whose every chain is such may hold none (nft lists no chain of
    it, and would_make counts it missing). A table not shown is not there (one iptables-nft
    cannot read is named as such, and :func:`up_iptables` refuses it before). One that
    ``recorded`` names need not be told apart: the record is the same whether would_make lists
    it or not."""
    busy = {(t, line.split()[1]) for t, line in rules}
    out: dict[str, set[str]] = {}
    for table, chains in shown.items():
        sure = {c for c, policy in chains.items() if policy != "ACCEPT" or (table, c) in busy}
        if sure:
            out[table] = sure
    unsure = [t for t in USED if t in shown and t not in out]
    unsure += [
        f"{t}/{c}" for t, cs in USED.items() if t in shown for c in cs if c not in out.get(t, ())
    ]
    if not unsure:
        return out
    if recorded is None:
        return None
    from fireroute import jsontext

    made = _strings(jsontext.loads(recorded))
    return out if all(u in made for u in unsure) else None


def made_record(recorded: str | None, made: list[str]) -> str | None:
    """The record of what fireroute's iptables rules brought in (``IPT_MADE``), with ``made``
    added; None when nothing is new."""
    from fireroute import jsontext

    if not made:
        return None
    before = _strings(jsontext.loads(recorded)) if recorded else []
    new = [m for m in made if m not in before]
    return jsontext.dumps(before + new) if new else None


def up_bridges(current: Index, desired: Index, vms: list[Vm], missing: set[str]) -> set[tuple]:
    """The bridges the new guests join as up finds them: a masquerading guest's egress element
    added again (the keys of those another guest's up added, returned: the undo leaves them);
    a bridge that is there used as it is (ours, or adopted), one that is not (``missing``)
    made."""
    held = egress_again(current, vms)
    for br in {str(v.options.bridge) for v in vms if v.mode == "bridge"}:
        gateway6 = {k: o for k, o in current.items() if of_link(k, o, br) and _v6(k)}
        for k in [k for k, o in current.items() if of_link(k, o, br)]:
            del current[k]
        if br not in missing:  # (the guests' IPv6 gateway: there as the shape says)
            current.update((k, o) for k, o in desired.items() if of_link(k, o, br) and not _v6(k))
            current.update(gateway6)
    return held


def gateway6_found(
    current: Index, desired: Index, vms: list[Vm], missing: set[str], runner: Runner
) -> None:
    """A bridge's IPv6 gateway (``fe80::1``) this state file's up would add first, found on
    the bridge (another state file's guests with IPv6 use it): in ``current`` as there (not
    added twice; an undo leaves it). Read only when no guest of this state file on that
    bridge has IPv6 yet."""
    six = {str(v.options.bridge) for v in vms if v.mode == "bridge" and v.net6 is not None}
    for br in sorted(six - missing):
        want = [(k, o) for k, o in desired.items() if of_link(k, o, br) and _v6(k)]
        want = [(k, o) for k, o in want if k not in current]
        if want and observe.has_address(br, want[0][1].cidr, runner):  # type: ignore[attr-defined]
            current.update(want)


def _v6(key: tuple) -> bool:
    """Is ``key`` an IPv6 address's (a bridge's gateway for its guests with IPv6)?"""
    return key[0] == "addr" and ":" in key[1][2]


def egress_again(current: Index, vms: list[Vm]) -> set[tuple]:
    """A masquerading bridge guest adds its bridge's egress element whether or not another
    guest's up added it (the add is idempotent; a lost one comes back): not in ``current``.
    Returns the keys of those another guest's up added (the undo leaves them)."""
    masq = {f'"{v.options.bridge}" . "{v.uplink}"' for v in vms if masquerading_bridge(v)}
    held = {
        k for k, o in current.items() if k[0] == "nft element" and o.vm is None
        and o.value in masq  # type: ignore[attr-defined]
    }  # fmt: skip
    for k in held:
        del current[k]
    return held


def _egress(key: tuple, obj: Obj) -> bool:
    """Is ``obj`` a masquerading bridge's shared egress element (no VM's)?"""
    return key[0] == "nft element" and obj.vm is None and obj.set == "egress"  # type: ignore[attr-defined]


def egress_found(current: Index, desired: Index, held: set[tuple], runner: Runner) -> set[tuple]:
    """A bridge's egress element this state file's up would add first, found in its table
    (another state file's guests on that bridge use it): the keys of those, which the undo
    of a failed up leaves. Read only when no guest of this state file has it yet."""
    found: set[tuple] = set()
    sets: dict[str, dict[str, str] | None] = {}
    for k, o in desired.items():
        if not _egress(k, o) or k in current or k in held:
            continue
        table = o.table  # type: ignore[attr-defined]
        if table not in sets:
            sets[table] = observe.nft_set(table, "egress", runner)
        if o.value in (sets[table] or {}):  # type: ignore[attr-defined]
            found.add(k)
    return found


def bridge_table(current: Index, desired: Index, table: str, runner: Runner) -> bool:
    """A bridge-family table the other VMs do not have, read: ours (its layout put in
    ``current``: added to) or none (True: made exclusively)."""
    key = ("nft table", (None, BRIDGE, table))
    if key not in desired or key in current:
        return False
    if not observe.check_table_owner(table, runner, BRIDGE):
        return True
    from fireroute.want.render import index
    from fireroute.want.tables import filter_layout

    current.update(index(filter_layout(table)))
    return False


# -- down ----------------------------------------------------------------------------------------


def down(records: Records, runner: Runner, vms: list[Vm]) -> Read:
    """What ``vms`` and the shared objects have (as recorded: their leases rendered, no
    per-VM read) and what the VMs that stay want (``desired`` of the shape without them).
    Shared objects (a bridge we made, a table, the shared iptables rule, forwarding) go with
    the last VM of this state file only when nothing of another state file's still uses
    them: the kernel is read at those thresholds only, and what it says is not ours to take
    is left out of ``current``."""
    from fireroute.want import render

    instance = records.instance()
    everyone, leaving = Population(records.shapes()), Population.of(vms)
    stay = everyone.less(leaving)
    remaining, going = shared(stay, instance), shared(leaving, instance)
    # (without their iptables rules: iptables_found puts them in as found)
    rendered = [render.vm(v, rules=False) for v in vms]
    held = render.needed_sets(vms, rendered)  # (the parts their elements imply)
    read = Read(render.desired([], everyone, instance, held))
    current = read.current
    for objs in rendered:
        current.update(render.index(_tap_keeps(objs)))
    _last_on_bridges(current, going.bridges - remaining.bridges, instance, vms, runner)
    _others_bridged6(current, going.bridges6 - remaining.bridges6, vms, runner)
    gone = [
        (family, table)
        for family in (NAT, NAT6, BRIDGE)
        for table in sorted(set(going.tables_of(family)) - set(remaining.tables_of(family)))
    ]
    _last_in_tables(current, gone, instance, runner)
    _iptables_found(records, runner, read, vms, remaining.conntrack)
    _last_forwardings(
        records, runner, read, vms, not remaining.forwarding,
        going.forwarding6 and not remaining.forwarding6,
    )  # fmt: skip
    read.desired = render.desired([], stay, instance, held)
    _egress_used(current, read.desired, instance, runner)
    return read


def _others_bridged6(
    current: Index, bridges: frozenset[str], vms: list[Vm], runner: Runner
) -> None:
    """Bridges whose last guest with IPv6 of this state file goes, read once: another state
    file's guests with IPv6 on them (their /64s routed onto the bridge) put in ``current``,
    as nobody's here: the bridge's ``fe80::1`` stays while they do (plan/diff.py
    ``others_use``)."""
    from fireroute.want.netns import Route

    if not bridges:
        return
    going = {str(v.net6) for v in vms if v.net6 is not None}
    for block, br in observe.bridged6(bridges, runner):
        if block not in going:
            route = Route(block, None, br, "", "", None)
            current.setdefault((route.kind, route.key), route)


def _tap_keeps(objs: list[Obj]) -> list[Obj]:
    """A going VM's objects but those its tap takes with it (its addresses, the routes
    through it, its per-device sysctls: the kernel removes them with the device, and the diff
    gives them no operation of their own; a VM with IPv6 has twice as many). Down deletes
    every going VM's tap (rendered: it is in ``current``, ours, and not wanted)."""
    from fireroute.plan.diff import parents

    taps = {
        ("link", o.key)
        for o in objs
        if o.kind == "link" and o.ns is None and o.link_kind == "tun"  # type: ignore[attr-defined]
    }
    if not taps:
        return objs
    return [
        o
        for o in objs
        if o.kind not in TAKEN or _route6(o) or not any(p in taps for p in parents(o))
    ]


def _route6(obj: Obj) -> bool:
    """A tap's route to a VM's /64, and its IPv6 gateway: kept in ``current`` (the diff plans
    no delete of its own under a deleted tap); a group delete of many such taps deletes the
    routes first, the kernel's own for the gateway the lease says too (plan/compiler.py
    ``_taps_down``)."""
    if obj.kind == "addr":
        return obj.cidr.startswith("fe80:")  # type: ignore[attr-defined]
    return obj.kind == "route" and ":" in obj.dst  # type: ignore[attr-defined]


TAKEN = ("addr", "route", "sysctl")
"""kinds a link takes with it when it is deleted"""


def _egress_used(current: Index, desired: Index, instance: str, runner: Runner) -> None:
    """A bridge's egress element that no guest of this state file that stays wants, read at
    that threshold: while a masquerading guest of another state file is on that bridge (its
    ``bridged`` element, and its ``masq`` one out of the same uplink), the element stays (it
    is left out of ``current``)."""
    from fireroute import owner

    listings: dict[str, dict[str, dict[str, str]] | None] = {}
    for k, o in [(k, o) for k, o in current.items() if _egress(k, o) and k not in desired]:
        table = o.table  # type: ignore[attr-defined]
        if table not in listings:
            listings[table] = observe.nft_elements(table, runner)
        sets = listings[table] or {}
        bridge, _, uplink = o.value.partition(" . ")  # type: ignore[attr-defined]
        masq = sets.get("masq", {})
        for value, comment in sets.get("bridged", {}).items():
            on, _, addr = value.partition(" . ")
            tag = owner.parse(comment)
            if on == bridge and tag and tag[0] != instance and f"{addr} . {uplink}" in masq:
                del current[k]
                break


def _last_forwardings(
    records: Records, runner: Runner, read: Read, vms: list[Vm], last: bool, last6: bool
) -> None:
    """With the last of this state file's VMs (``last``), with IPv6 (``last6``): forwarding,
    IPv6's, as found (restored) or left; the links of fireroute's of other state files that
    stay read once for both."""
    if not (last or last6):
        return
    from fireroute import owner

    tagged = {n: owner.parse(a) or ("", "") for n, a in observe.tagged_links(runner).items()}
    # (a link this down deletes is none: its VMs' taps, their bridge if it goes with them)
    bridges = {str(v.options.bridge) for v in vms if v.mode == "bridge"}
    leaving = {v.tap for v in vms} | {b for b in bridges if ("link", (None, b)) in read.current}
    mine = records.instance()
    others = sorted(n for n, t in tagged.items() if t[0] != mine and n not in leaving)
    if last:
        _last_forwarding(records, read, others)
    if last6:  # (a bridge is no tap: a guest with IPv6 on one has its /64 routed onto it)
        ours = [n for n, t in tagged.items() if t[1].startswith(owner.BRIDGE)]
        others6 = [n for n in others if n not in ours]
        _last_forwarding6(records, runner, read, others6, _bridged6_of(ours, vms, runner))


def _last_forwarding(records: Records, read: Read, others: list[str]) -> None:
    """With the last of this state file's VMs: forwarding as found (restored), or left while
    ``others`` (links of fireroute's of another state file) stay."""
    read.current.pop(FORWARDING, None)
    found = _forwarding_found(records, others)
    if found is not None:
        read.current[FORWARDING] = found
    read.forget.append(FORWARD_RECORD)


def _bridged6_of(bridges: list[str], vms: list[Vm], runner: Runner) -> bool:
    """Is a guest with IPv6 that stays on one of fireroute's ``bridges`` (of any state file:
    a /64 routed onto it that is not one of the going ``vms``')?"""
    going = {str(v.net6) for v in vms if v.net6 is not None}
    return any(block not in going for block, _ in observe.bridged6(bridges, runner))


def _last_forwarding6(
    records: Records, runner: Runner, read: Read, others: list[str], bridged6: bool = False
) -> None:
    """With the last of this state file's VMs with IPv6: IPv6 forwarding as found (restored),
    or left while another state file's VM with IPv6 stays (its tap among ``others``,
    :func:`_v6_tap_of`; a bridge port or a clone's veth has IPv6 on too, but its VM has no
    IPv6)."""
    from fireroute.kernel import forwarding as record

    read.current.pop(FORWARDING6, None)
    read.forget += [FORWARD6_BEFORE, FORWARD6_RECORD]
    if bridged6 or _v6_tap_of(others, runner):
        return
    before = record.recorded(record.V6) or records.meta(FORWARD6_BEFORE)
    read.current[FORWARDING6] = Forwarding(forwarding6(), before, path=FORWARD6_KEY)


def _v6_tap_of(devs: list[str], runner: Runner) -> bool:
    """Is one of the links the tap of a VM with IPv6 (want/tap.py ``v6_tap``; gone: no)? The
    IPv6 addresses are read (one ``ip`` for all) only of those whose sysctls alone do not
    tell."""
    from fireroute.want.tap import ADDR_GEN6, DISABLE6, v6_tap

    unsure = []
    for dev in devs:
        try:
            disable = read_sysctl(DISABLE6.format(dev))
            mode = read_sysctl(ADDR_GEN6.format(dev))
        except OSError:
            continue
        if v6_tap(disable, mode):
            return True
        if disable == "0":  # (addr_gen_mode changed behind fireroute's back?)
            unsure.append((dev, mode))
    if not unsure:
        return False
    docs = observe.ip_batch_json([f"address show dev {dev}" for dev, _ in unsure], runner)
    for (_, mode), doc in zip(unsure, docs, strict=True):
        listed = doc if isinstance(doc, list) else []
        found = [a for d in listed if isinstance(d, dict) for a in d.get("addr_info", ())]
        cidrs = [
            f"{a['local']}/{a['prefixlen']}"
            for a in found
            if a.get("family") == "inet6" and a.get("nodad")
        ]
        if v6_tap("0", mode, cidrs):
            return True
    return False


def _last_on_bridges(
    current: Index, bridges: frozenset[str], instance: str, vms: list[Vm], runner: Runner
) -> None:
    """A bridge no VM that stays is on goes only if fireroute made it (its alias: this state
    file's, or another's whose guests left it first) and nobody else's link is on it: else
    it is left out of ``current``."""
    from fireroute import owner

    leaving = {v.tap for v in vms}
    for br in sorted(bridges):
        tag = owner.parse(observe.link_alias(br, runner) or "")
        ours = tag is not None and tag[1] == owner.bridge_name(br)
        if ours and not set(observe.bridge_ports(br, runner)) - leaving:
            continue  # ours, and nobody left on it
        for k in [k for k, o in current.items() if of_link(k, o, br)]:
            del current[k]


def _last_in_tables(
    current: Index, tables: list[tuple[str, str]], instance: str, runner: Runner
) -> None:
    """Tables (family, name) no VM that stays uses, each read once (its owner, the elements
    in it; the listings side by side): absent, nothing of it is in ``current``; holding
    another state file's elements, it stays (its table, sets and chains left out of
    ``current``), and only our elements go; ours only, it goes, and its elements with it
    (``current`` holds ours only: their deletes would go with the table's, so they are left
    out of ``current`` and the diff)."""
    found = observe.last_in_tables(tables, instance, runner)
    for (family, table), foreign in zip(tables, found, strict=True):
        if foreign is not None and not foreign:
            elements = [k for k in current if k[0] == "nft element"]
            for k in [k for k in elements if _in_table(k, family, table)]:
                del current[k]
            continue
        structure = ("nft table", "nft set", "nft chain")
        for k in [k for k in current if _in_table(k, family, table)]:
            if foreign is None or k[0] in structure:
                del current[k]


def _iptables_found(
    records: Records,
    runner: Runner,
    read: Read,
    vms: list[Vm],
    wanted: bool,
    saved: list[IptRule] | None = None,
    unreadable: list[str] | None = None,
) -> None:
    """The iptables rules as found (iptables-nft-save, read when a VM with rules goes: a
    restore batch that deletes a missing rule fails whole) in ``current`` for those
    recorded; with the last rules of any VM (``wanted``: the shared rule stays), the nft
    chains and tables fireroute's first rules made go too (their steps in ``cleanup``).
    ``saved``: the rules a whole read found (teardown: every rule of this state file's
    goes), ``unreadable`` the tables it could not read. In a table iptables-nft cannot read
    (written with nft since), the going VMs' rules are deleted unseen, as if found (one not
    there fails its table's section, which is then done)."""
    from fireroute import owner
    from fireroute.want.iptables import comment_tag, tag

    ipt = [v for v in vms if nat_member(v) and _has_rules(v)]
    if not ipt:
        return
    from fireroute.kernel.read import rule_of

    if saved is None:
        present, _, unreadable, _ = observe.iptables_save(runner)
        tags = {tag(v) for v in ipt}
    else:
        present = [(r.table, r.saved) for r in saved]
        tags = _tags_of(records.instance(), present)
    odd = set(unreadable or ())
    current = read.current
    for k in [k for k in current if k[0] == "iptables rule"]:
        del current[k]
    _unseen(current, ipt, odd)
    found = [(t, line, comment_tag(line)) for t, line in present]
    others = any(c and c != owner.SHARED and c not in tags for _, _, c in found)
    for t, line, c in found:  # the shared rule stays while another VM's rule does
        if c is not None and not (others and c == owner.SHARED):
            rule = rule_of(t, line)
            current[(rule.kind, rule.key)] = rule
    if not (wanted or others):
        left = [(t, line) for t, line, c in found if c is None]
        _made_chains(records, runner, read, left, odd)


IPT_MADE = "ipt_made"
"""state meta: the iptables-nft tables and chains fireroute's first iptables rules brought into
being (JSON list of "table" and "table/chain"), removed again with its last rules"""
USED = {  # (observe.py's list of them, by table)
    t: tuple(c for u, c in observe.STANDARD_CHAINS if u == t) for t, _ in observe.STANDARD_CHAINS
}
"""the tables and chains fireroute's iptables rules go into"""


def would_make(before: dict[str, set[str]]) -> list[str]:
    """Of the tables and chains fireroute's rules use, those that do not exist yet."""
    made = []
    for table, chains in USED.items():
        if table not in before:
            made.append(table)
        made += [f"{table}/{c}" for c in chains if c not in before.get(table, set())]
    return made


def cleanup(
    made: list[str],
    remaining: list[tuple[str, str]],
    now: dict[str, set[str]],
    odd: Collection[str] = (),
    held: Collection[tuple[str, str]] = (),
) -> str:
    """nft commands removing what ``would_make`` recorded, once fireroute's last rules are
    gone: a chain only if no rule (anyone's) is left in it and its policy accepts (``held``:
    the (table, chain) whose policy does not, an operator's DROP set since: removing the
    chain would lift it), a table only if every chain left in it is one of those; nothing of
    a table iptables-nft cannot read (``odd``: made over with nft since, its rules unseen).
    Empty string when there is nothing to remove."""
    made = [m for m in made if m.partition("/")[0] not in odd]
    busy = {(t, line.split()[1]) for t, line in remaining} | set(held)
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


def made_undo(runner: Runner, was: str | None, made: str) -> None:
    """A failed up's undo, its rules taken out again: the iptables-nft tables and chains its
    rules brought in (``made``, as :func:`made_record` recorded them, less ``was``, the record
    before it) removed where nothing (anyone's rule, an operator's DROP policy) is left in
    them, as the last VM's down removes them (else a failed first up left empty tables)."""
    from fireroute import jsontext

    before = set(_strings(jsontext.loads(was or "[]")))
    new = [m for m in _strings(jsontext.loads(made)) if m not in before]
    if not new:
        return
    present, _, unreadable, _ = observe.iptables_save(runner)
    now, held = observe.nft_ip_chains_held(runner)
    script = cleanup(new, present, now, unreadable, held)
    if script:
        runner(["nft", "-f", "-"], script)


def _made_chains(
    records: Records,
    runner: Runner,
    read: Read,
    left: list[tuple[str, str]],
    odd: set[str],
) -> None:
    """The nft chains and tables fireroute's first iptables rules made, once its last rules
    go (``left``: the rules that stay, none of them fireroute's; ``odd``: the tables
    iptables-nft cannot read)."""
    from fireroute import jsontext

    made = records.meta(IPT_MADE)
    if made is None:
        return
    read.forget.append(IPT_MADE)
    now, held = observe.nft_ip_chains_held(runner)
    script = cleanup(_strings(jsontext.loads(made)), left, now, odd, held)
    if script:
        read.cleanup.append(Step(NFT, script, "remove the iptables-nft chains fireroute made"))


def _forwarding_found(records: Records, others: list[str]) -> Forwarding | None:
    """Forwarding as it is, with what it was before fireroute switched it on (the
    namespace's record, whichever state file made it, else the state file's record); None
    while a link of fireroute's of another state file (``others``) is left in this
    namespace."""
    from fireroute.kernel import forwarding as record

    if others:
        return None
    before = record.recorded() or records.meta(FORWARD_BEFORE)
    return Forwarding(forwarding(), before)


# -- teardown ------------------------------------------------------------------------------------


def teardown(records: Records, runner: Runner, src: Source, vms: list[Vm]) -> Read:
    """Everything read from ``src`` (every object tagged for this state file, our tables)
    and what the leases say they have; what is another state file's, and a shared object
    something else still uses, stays (plan/diff.py). ``runner``: the threshold reads'."""
    from fireroute.kernel.read import read as read_host
    from fireroute.want import render

    instance = records.instance()
    from fireroute.state.store import POOL6

    found = read_host(src, vms, instance, records.meta(POOL6))
    read = Read(render.desired(vms, None, instance))
    current = read.current
    _only_read_tables(current, found.objs, found.foreign_tables)
    current.update(found.objs)  # what is there, as it is
    _tables_ours(current)
    _iptables_found(records, runner, read, vms, False, found.ipt, found.ipt_unreadable)
    current.pop(FORWARDING, None)
    current.pop(FORWARDING6, None)
    # (with the last of this state file's VMs (with IPv6), as down does)
    six = any(v.net6 is not None for v in vms)
    _last_forwardings(records, runner, read, vms, bool(vms), six)
    return read


def _only_read_tables(recorded: Index, found: Index, foreign: list[tuple[str, str]]) -> None:
    """The recorded tables the whole read did not find are not there (nothing of them is
    taken), or are not ours: refused, as down refuses them."""
    read = {k[1][1:3] for k in found if k[0] == "nft table" and k[1][0] is None}
    for k in [k for k in recorded if k[0].startswith("nft ") and k[1][0] is None]:
        if k[1][1:3] not in read:
            if k[0] == "nft table" and k[1][1:3] in foreign:
                raise observe.not_ours(k[1][2], k[1][1])
            del recorded[k]


def _tables_ours(current: Index) -> None:
    """The root namespace's tables the read found are ours (it reads those with our
    comment)."""
    from fireroute.want.tables import shared_table

    for k, o in current.items():
        if o.kind == "nft table" and o.ns is None:
            current[k] = shared_table(k[1][1], k[1][2])


# -- helpers ---------------------------------------------------------------------------------


def of_link(key: tuple, obj: Obj, name: str) -> bool:
    """Is ``obj`` the root namespace's link ``name`` or one of its addresses?"""
    return key == ("link", (None, name)) or (obj.kind == "addr" and key[1][:2] == (None, name))


def _in_table(key: tuple, family: str, table: str) -> bool:
    """Is ``key`` a root namespace table's, or of a set, chain or element in it?"""
    return key[0].startswith("nft ") and key[1][:3] == (None, family, table)


def _unseen(current: Index, vms: list[Vm], unreadable: set[str]) -> None:
    """The rules of ``vms`` in tables iptables-nft cannot read (``unreadable``), in
    ``current`` as if found: their deletes are written unseen."""
    hidden = unreadable  # (of the tables fireroute's rules use: observe.iptables_save)
    if not hidden:
        return
    from fireroute.want import render

    for o in (o for v in vms for o in render.vm(v) if o.kind == "iptables rule"):
        if o.table in hidden and o.vm is not None:  # type: ignore[attr-defined]
            current[(o.kind, o.key)] = o


def _has_rules(vm: Vm) -> bool:
    """Has a NAT member iptables rules of its own (its backend's, or the FORWARD-policy fix)?"""
    return vm.backend == "iptables" or bool(vm.options.fix_forward_policy)


def _tags_of(instance: str, rules: list[tuple[str, str]]) -> set[str]:
    """The comments of the rules tagged for a VM of the state file ``instance``."""
    from fireroute import owner
    from fireroute.want.iptables import comment_tag

    mine = owner.PREFIX + instance + ":"
    tags = (comment_tag(line) or "" for _, line in rules)
    return {t for t in tags if t.startswith(mine)}


def _strings(doc: object) -> list[str]:
    """A list of strings recorded in the state file's meta (anything else: none)."""
    return [x for x in doc if isinstance(x, str)] if isinstance(doc, list) else []
