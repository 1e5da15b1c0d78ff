"""A diff's operations (plan/diff.py) as steps: :func:`compile` writes the text, order, undo
and grouping the golden files hold (docs/core-migration.md, section 6):

- up: the shared links (a bridge we make); per VM in lease order (a NAT VM's tap after the
  others) its links, each made, addressed, then tagged and brought up (a clone's namespace
  filled after its veth, a CNI namespace's links before the host end); the per-device
  sysctls, then route_localnet; forwarding (IPv4's, IPv6's); each NAT table as one nft
  transaction (a table that stays: the sets written and the parts a VM brings in, then a
  chain declared again, the forward chain with the egress policy's jump), the ip6 tables'
  right after the ip ones' (consecutive nft steps: one process); a NAT tap's IPv6 address
  and route (refused before its sysctls on a host whose default is IPv6 off: their ip
  process waits for the sysctls, and the tables run beside the taps' ip before); iptables
  (the conntrack rule first); the FORWARD-policy fix; conntrack flushes of UDP ports just
  published; the bridge family's table;
- down: the links (several taps regrouped and deleted as one group, many taps with IPv6
  their /64 routes first, a clone's veth then its
  namespace, a CNI namespace's links as one group then the host end, a bridge we made last),
  the NAT tables (ip, then ip6), the bridge table, iptables, forwarding.

Each step carries the operations it does (:attr:`OpStep.ops`). The per-VM ``up`` and
``down`` plan with it, and restore clears a clone or CNI attachment with it.
"""

from __future__ import annotations

from fireroute.plan.ops import (
    CREATE,
    DELETE,
    REPLACE,
    SET,
    Act,
    OpStep,
    _block,
    delete_step,
    group_delete_step,
    regroup_step,
    sysctl_step,
)
from fireroute.plan.steps import CONNTRACK, IP, IPTABLES, NFT, SYSCTL, TC, Step
from fireroute.want.objects import FORWARD6_KEY, FORWARD_KEY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from fireroute.want.nft import NftElement
    from fireroute.want.objects import Link, Obj

    Index = dict[tuple, Obj]

# -- the diff's operations ---------------------------------------------------------------------

LINKS = ("netns", "link", "addr", "route", "tc redirect")
"""kinds made in a VM's block of links"""


def compile(
    ops: Iterable[Any],
    exclusive: Iterable[tuple[str, str]] = (),
    before: str | None = None,
    found: Index | None = None,
    before6: str | None = None,
) -> list[Step]:
    """The steps doing ``ops`` (plan/diff.py's), as today's plans write them. ``exclusive``:
    the (family, table) made with ``create table`` (none of that name may exist: the caller
    found none of ours); ``before``: forwarding's value before an up switches it on (its
    undo); ``found``: the objects the diff was made from (a down deletes what went with a
    deleted object by name, as today: a clone's veth, a CNI attachment's tap); ``before6``:
    IPv6 forwarding's value before (its undo)."""
    replaced: list[Act] = []  # (deleted first, then made again)
    deletes: list[Act] = []
    acts: list[Act] = []
    for op in ops:
        verb = op.verb
        if verb == DELETE:
            deletes.append(Act(DELETE, op.obj))
            continue
        if verb == REPLACE:
            replaced.append(Act(DELETE, op.have or op.obj))
            verb = CREATE
        acts.append(Act(verb, op.obj))
        if op.children:
            acts += [Act(CREATE, kid) for kid in op.children]
    befores = {FORWARD_KEY: before, FORWARD6_KEY: before6}
    return _down(replaced + deletes, found or {}) + _up(acts, set(exclusive), befores)


def _root(a: Act, *kinds: str) -> bool:
    return a.obj.ns is None and a.obj.kind in kinds


def _up(
    acts: list[Act], exclusive: set[tuple[str, str]], befores: dict[str, str | None]
) -> list[Step]:
    links: list[Act] = []
    late: list[Act] = []  # a tap's IPv6 address and route: after its sysctls (F11)
    rest: dict[str, list[Any]] = {}  # the root namespace's other objects, by kind
    nft: dict[str, list[Act]] = {"ip": [], "ip6": [], "bridge": []}  # by family, in order
    for a in acts:
        o = a.obj
        if o.kind == "neigh proxy" or (o.kind in ("addr", "route") and _v6_on_host(o)):
            late.append(a)
            continue
        if o.kind in LINKS or o.ns is not None:
            links.append(a)
            continue
        rest.setdefault(o.kind, []).append(o)
        if o.kind.startswith("nft "):
            nft.setdefault(o.family, []).append(a)
    sysctls = rest.get("sysctl", [])
    localnet = [s for s in sysctls if s.path.endswith("/route_localnet")]
    steps = _links_up(links)
    steps += [sysctl_step(s) for s in sysctls if s not in localnet]
    steps += [sysctl_step(s) for s in localnet]
    steps += [_forwarding(o, befores.get(o.path)) for o in rest.get("forwarding", [])]
    steps += _tables(nft["ip"], "ip", exclusive)
    steps += _tables(nft["ip6"], "ip6", exclusive)  # (the same nft process: one transaction)
    # the IPv6 addresses and routes last: their ip waits for the sysctls (written after the
    # processes of their wave), the tables need not, and run beside the taps' ip (a batch of
    # VMs: one wave less long); a guest's /64 is routed once its elements are in
    steps += [_undoable(a) for a in late]
    steps += _iptables(rest.get("iptables rule", []))
    steps += _flushes(rest.get("nft element", []))
    return steps + _tables(nft["bridge"], "bridge", exclusive)


def _v6_on_host(obj: Obj) -> bool:
    """A root namespace's IPv6 address or route (a NAT tap's: its gateway, the route to its
    /64)."""
    if obj.ns is not None:
        return False
    if obj.kind == "addr":
        return ":" in obj.cidr  # type: ignore[attr-defined]
    return obj.kind == "route" and ":" in obj.dst  # type: ignore[attr-defined]


def _undoable(a: Act) -> Step:
    """An address or route made on its own, undone by its delete."""
    o = a.obj
    return OpStep(IP, o.text(CREATE), o.what(CREATE), o.vm, (delete_step(o),), ops=[a])


def _iptables(rules: list[Any]) -> list[Step]:
    """The shared conntrack rule, the VMs' blocks, then their FORWARD-policy fixes."""
    shared = [r for r in rules if r.vm is None]
    steps = _rules(shared, "add shared conntrack rule", "remove shared conntrack rule")
    block = [r for r in rules if r.vm is not None and not r.insert]
    steps += _rules(block, "add iptables rule", "remove iptables rule")
    fix = [r for r in rules if r.vm is not None and r.insert]
    return steps + _rules(fix, "accept in iptables-nft FORWARD", "remove FORWARD-policy fix")


# -- links ---------------------------------------------------------------------------------------


def _shared_link(obj: Obj) -> bool:
    """A bridge we make and its address (tagged for the bridge, not a VM)."""
    from fireroute import owner

    if obj.kind not in ("link", "addr"):
        return False
    tag = owner.parse(obj.owner)
    return tag is not None and tag[1].startswith(owner.BRIDGE)


def _nat_tap(block: list[Act]) -> bool:
    """A NAT VM's block: its tap is in the root namespace and in no bridge."""
    return any(
        a.obj.kind == "link" and a.obj.ns is None and a.obj.link_kind == "tun" and not a.obj.master
        for a in block
    )


def _links_up(acts: list[Act]) -> list[Step]:
    shared = [a for a in acts if _shared_link(a.obj)]
    by_vm: dict[str | None, list[Act]] = {}
    for a in acts:
        if not _shared_link(a.obj):
            by_vm.setdefault(a.obj.vm, []).append(a)
    blocks = [b for b in by_vm.values() if not _nat_tap(b)]
    blocks += [b for b in by_vm.values() if _nat_tap(b)]
    steps = _block(shared)
    for b in blocks:
        spaces = {a.obj.ns for a in b if a.obj.ns is not None}
        named = [a.obj.name for a in b if a.obj.kind == "netns"]
        named += [ns for ns in spaces if not ns.startswith("/")]
        if named:
            steps += _clone_up(b, named[0])
        elif spaces:
            steps += _cni_up(b)
        else:
            steps += _block(b)
    return steps


def _clone_up(acts: list[Act], ns: str) -> list[Step]:
    """The namespace and the host's end of the veth; the namespace filled (as one action
    when it is made here); then the host's routes."""
    made = any(a.obj.kind == "netns" and a.verb == CREATE for a in acts)
    root = [a for a in acts if a.obj.ns is None and a.obj.kind != "route"]
    inside = [a for a in acts if a.obj.ns is not None]
    routes = [a for a in acts if _root(a, "route")]
    return _block(root) + _block(inside, ns if made else None) + _block(routes)


def _host_end(link: Link, objs: Iterable[Obj]) -> Obj:
    """The host end of a veth made in a namespace: as wanted (or found), else by its name."""
    from fireroute.want.objects import Link

    assert link.peer is not None
    for o in objs:
        if o.kind == "link" and o.key == link.peer:
            return o
    return Link(link.peer[1], "veth", link.owner, link.vm, "", link.peer[0])


def _cni_up(acts: list[Act]) -> list[Step]:
    """In the namespace: its links made, then brought up, their IPv6 off (before the host
    end gives the veth carrier), then the redirects; on the host: the veth's end addressed and
    brought up, then the route to a delegated guest."""
    links = [a for a in acts if a.obj.ns is not None and a.obj.kind == "link"]
    steps: list[Step] = []
    for a in links:
        o = a.obj
        if a.verb != CREATE or not o.made:
            continue
        where = f'in "{o.ns}"'
        if o.link_kind == "veth":
            undo = delete_step(_host_end(o, [b.obj for b in acts]))
        else:
            undo = Step(IP, o.text(DELETE), f'delete {o.noun} "{o.name}" {where}', o.vm, netns=o.ns)
        what = f'create {o.noun} "{o.name}" {where}'
        steps.append(OpStep(IP, o.text(CREATE), what, o.vm, (undo,), netns=o.ns, ops=[a]))
    for a in links:
        o = a.obj
        steps.append(
            OpStep(IP, o.text(SET), f'bring up "{o.name}"', o.vm, netns=o.ns, ops=[Act(SET, o)])
        )
    steps += [sysctl_step(a.obj) for a in acts if a.obj.kind == "sysctl" and a.obj.ns is not None]
    for a in acts:
        if a.obj.kind == "tc redirect":
            r = a.obj
            lines = r.lines()
            steps += [
                OpStep(TC, line, r.what(), r.vm, netns=r.ns, ops=[a] if i == 0 else [])
                for i, line in enumerate(lines)
            ]
    return steps + _block([a for a in acts if a.obj.ns is None and a.obj.kind != "sysctl"])


# -- sysctls, forwarding, iptables, conntrack ------------------------------------------------------


def _forwarding(obj: Any, before: str | None) -> Step:
    """Forwarding (IPv4's or IPv6's: ``obj.path``) set to its value, undone (given what it
    was) by setting it back."""
    from fireroute.want.objects import Forwarding

    was = obj.before if before is None else before
    undo = (Step(SYSCTL, f"{obj.path}={was}", obj.what(DELETE)),) if was else ()
    act = Act(SET, Forwarding(obj.value, path=obj.path))
    return OpStep(SYSCTL, obj.text(SET), obj.what(SET), undo=undo, ops=[act])


def _forwarding_back(obj: Any) -> list[Step]:
    """Forwarding set back to what it was before fireroute switched it on."""
    from fireroute.want.objects import Forwarding

    if obj.before is None or obj.before == obj.value:
        return []
    undo = Step(SYSCTL, f"{obj.path}={obj.value}", obj.what(DELETE))
    act = Act(SET, Forwarding(obj.before, path=obj.path))
    text = obj.text(DELETE)
    return [OpStep(SYSCTL, text, obj.what(SET), undo=(undo,), ops=[act])]


def _rules(rules: list[Any], what: str, undo_what: str) -> list[Step]:
    """Each rule's line, undone by its delete."""
    return [
        OpStep(
            IPTABLES,
            r.text(CREATE),
            what,
            r.vm,
            undo=(Step(IPTABLES, r.text(DELETE), undo_what, r.vm, table=r.table),),
            table=r.table,
            ops=[Act(CREATE, r)],
        )
        for r in rules
    ]


def _flushes(elems: list[NftElement]) -> list[Step]:
    """UDP flows to the host ports just published: a datagram of a flow that began before
    would go on to where that flow went (conntrack keeps its path)."""
    from fireroute.want.tables import PORT_MAPS

    steps: list[Step] = []
    for e in elems:
        if e.set not in PORT_MAPS or (e.family == "ip6" and e.set == "pub_any"):
            continue  # (a port on every address: the ip table's element's flush has both
            # families; one on an IPv6 address is the ip6 table's only)
        fields = e.value.partition(" : ")[0].split(" . ")
        addr = fields.pop(0) if e.set == "pub_addr" else None
        proto, port = fields[0].strip('"'), fields[1]
        if proto != "udp":
            continue
        at = f" --orig-dst {addr}" if addr else ""
        what = f"forget UDP flows to port {port}"
        steps.append(Step(CONNTRACK, f"-D -p udp{at} --orig-port-dst {port}", what, e.vm))
    return steps


# -- nft tables ----------------------------------------------------------------------------------

WORDS = {
    "ip": (
        'add NAT entries to nftables table "{t}"',
        'remove NAT entries from table "{t}"',
        'delete nftables table "{t}"',
    ),
    "ip6": (
        'add NAT entries to nftables table "ip6 {t}"',
        'remove NAT entries from table "ip6 {t}"',
        'delete nftables table "ip6 {t}"',
    ),
    "bridge": (
        'add anti-spoofing entries to nftables table "bridge {t}"',
        'remove anti-spoofing entries of "{t}"',
        'delete nftables table "bridge {t}"',
    ),
}
"""per family: adding elements, removing them, deleting the table"""


def _kinds(family: str) -> tuple[dict[str, str], dict[str, str]]:
    """A NAT table's sets and maps (name -> type) by family."""
    if family == "ip6":
        from fireroute.want.tables6 import MAPS6, SETS6

        return SETS6, MAPS6
    from fireroute.want.nft import MAPS, SETS

    return SETS, MAPS


def _sets_only(family: str, names: set[str]) -> list[tuple[str, str, bool]]:
    """The sets a later VM's transaction declares: those its element lines write (the bridge
    family's table: all four), in the layout's order."""
    from fireroute.want.nft import FILTER_SETS, RANK

    if family == "bridge":
        return [(n, t, False) for n, t in FILTER_SETS.items()]
    sets, maps = _kinds(family)
    return [
        (n, sets[n], False) if n in sets else (n, maps[n], True)
        for n in sorted(names, key=RANK.__getitem__)
    ]


def _lines(verb: str, elems: list[NftElement]) -> str:
    from fireroute.want.nft import RANK, element_lines

    if not elems:
        return ""
    e = elems[0]
    return element_lines(verb, e.family, e.table, elems, RANK)


def _split(elems: list[NftElement]) -> tuple[list[NftElement], list[NftElement]]:
    """(a VM's own elements, the shared ones: a masquerading bridge's egress, sorted)."""
    own = [e for e in elems if e.vm is not None]
    shared = sorted((e for e in elems if e.vm is None), key=lambda e: (e.value, e.owner))
    return own, shared


def _one_vm(elems: list[NftElement]) -> str | None:
    vms = {e.vm for e in elems if e.vm is not None}
    return vms.pop() if len(vms) == 1 else None


def _drop(family: str, table: str, vm: str | None, table_obj: Any = None) -> Step:
    text = f"add table {family} {table}\ndelete table {family} {table}\n"
    ops = [Act(DELETE, table_obj)] if table_obj is not None else []
    return OpStep(NFT, text, WORDS[family][2].format(t=table), vm, ops=ops)


def _removal(family: str, table: str, elems: list[NftElement]) -> OpStep:
    """Idempotent removal: declaring the sets and adding first makes the delete succeed
    whether or not the elements (or the table) still exist."""
    from fireroute.want.tables import declare

    own, shared = _split(elems)
    head = declare(family, table, _sets_only(family, {e.set for e in own + shared}), [])
    body = _lines("add", own) + _lines("add", shared) + _lines("delete", own)
    body += _lines("delete", shared)
    what = WORDS[family][1].format(t=table)
    return OpStep(NFT, head + body, what, _one_vm(elems), ops=[Act(DELETE, e) for e in elems])


def _by_table(acts: list[Act], family: str) -> dict[str, list[Act]]:
    out: dict[str, list[Act]] = {}
    for a in acts:
        if a.obj.kind.startswith("nft ") and a.obj.ns is None and a.obj.family == family:
            out.setdefault(a.obj.key[2], []).append(a)
    return {t: out[t] for t in sorted(out)}


def _tables(acts: list[Act], family: str, exclusive: set[tuple[str, str]]) -> list[Step]:
    return [
        _table_up(family, table, of, (family, table) in exclusive)
        for table, of in _by_table(acts, family).items()
    ]


def _chains(acts: list[Act]) -> list[Any]:
    """The chains a transaction declares: those it makes, then those it declares again (the
    forward chain with the egress policy's jump after the parts it jumps to)."""
    chains = [a for a in acts if a.obj.kind == "nft chain"]
    return [a.obj for a in chains if a.verb == CREATE] + [a.obj for a in chains if a.verb != CREATE]


def _table_up(family: str, table: str, acts: list[Act], exclusive: bool) -> Step:
    """One transaction: a table made (``fresh``: its whole layout; made ``exclusive``, undone
    by deleting it) or one that may be there or stays (only the sets written declared; undone
    by removing what it adds, :func:`_added`); the elements, per set in the layout's order."""
    from fireroute.want.tables import TABLE_COMMENT, declare

    def of(kind: str) -> list[Any]:
        return [a.obj for a in acts if a.obj.kind == kind]

    elems = of("nft element")
    own, shared = _split(elems)
    vm = _one_vm(own)
    fresh = any(a.obj.kind == "nft table" and a.verb == CREATE for a in acts)
    if fresh and not exclusive and family != "bridge":  # a table that may exist (another
        # state file's) is declared whole: the parts its other VMs need stay (want/tables.py
        # PARTS)
        whole = _whole(family, table, {a.obj.key[3] for a in acts if a.obj.kind == "nft set"})
        acts = [a for a in acts if a.obj.kind not in ("nft set", "nft chain")]
        acts += [Act(CREATE, o) for o in whole]
    sets = [(s.name, s.type, s.is_map) for s in of("nft set")]
    if not fresh:
        named = {n for n, _, _ in sets}
        sets = [s for s in _sets_only(family, {e.set for e in elems}) if s[0] not in named] + sets
    undo = _drop(family, table, vm) if exclusive else _removal(family, table, _added(acts, own))
    head = declare(family, table, sets, _chains(acts))
    if exclusive:
        head = f'create table {family} {table} {{ comment "{TABLE_COMMENT}"; }}\n' + head
    body = _lines("add", own) + _lines("add", shared)
    what = WORDS[family][0].format(t=table)
    verb = CREATE if exclusive else SET  # (declared: made if missing, kept if there)
    done = [Act(verb, a.obj) for a in acts if a.obj.kind != "nft element"]
    done += [Act(CREATE, e) for e in own + shared]
    return OpStep(NFT, head + body, what, vm, (undo,), exclusive=exclusive, ops=done)


def _whole(family: str, table: str, sets: set[str]) -> list[Any]:
    """A NAT table's sets, maps and chains with every part (its family's layout; an ip6
    table's sub-/64 part only where ``sets``, those wanted, name it)."""
    if family == "ip6":
        from fireroute.want.tables import ALL_PARTS
        from fireroute.want.tables6 import nat6_layout, parts6_of

        return nat6_layout(table, ALL_PARTS | parts6_of(sets))[1:]
    from fireroute.want.tables import nat_layout

    return nat_layout(table)[1:]


def _added(acts: list[Act], own: list[NftElement]) -> list[NftElement]:
    """What an up into a table that may be there takes back when it fails: its own
    elements and the shared ones it adds (a shared one only declared, ``SET``, may be
    another VM's already); never the table, nor the parts it declares (another state
    file's VMs may use them)."""
    added = [a.obj for a in acts if a.obj.kind == "nft element" and a.verb == CREATE]
    return own + [e for e in added if e.vm is None]


def _table_down(family: str, table: str, acts: list[Act]) -> list[Step]:
    """The table deleted (with all in it), or the elements (and strays) removed from it."""
    dropped = [a.obj for a in acts if a.obj.kind == "nft table"]
    elems = [a.obj for a in acts if a.obj.kind == "nft element"]
    if dropped:
        return [_drop(family, table, _one_vm(elems), dropped[0])]
    steps: list[Step] = [_removal(family, table, elems)] if elems else []
    for a in acts:
        o = a.obj
        if o.kind in ("nft set", "nft chain"):
            word = "chain" if o.kind == "nft chain" else ("map" if o.is_map else "set")
            text = f"delete {word} {family} {table} {o.name}\n"
            if o.kind == "nft chain":  # (a chain that holds rules cannot be deleted)
                text = f"flush chain {family} {table} {o.name}\n" + text
            steps.append(OpStep(NFT, text, f"delete {word} {o.name} of {family} {table}", ops=[a]))
    return steps


# -- down ------------------------------------------------------------------------------------------


def _down(acts: list[Act], found: Index) -> list[Step]:
    """Deletes in today's down order: links, the NAT tables, the bridge tables, iptables,
    forwarding."""
    steps = _links_down(acts, found)
    for family in ("ip", "ip6", "bridge"):
        for table, of in _by_table(acts, family).items():
            steps += _table_down(family, table, of)
    for a in acts:
        if a.obj.kind == "iptables rule":
            r = a.obj
            steps.append(
                OpStep(
                    IPTABLES, r.text(DELETE), "remove iptables rule", r.vm, table=r.table, ops=[a]
                )
            )
    for a in acts:
        if a.obj.kind == "forwarding":
            steps += _forwarding_back(a.obj)
    return steps


def _links_down(acts: list[Act], found: Index) -> list[Step]:
    """The taps (several regrouped, then one group delete: the kernel batches the
    unregister), each clone's veth then its namespace, each CNI namespace's links as one
    group (the namespaces' groups side by side) then their host ends, what else goes on its
    own, the bridges we made last."""
    links = [a.obj for a in acts if a.obj.kind == "link"]
    steps = _taps_down([o for o in links if o.ns is None and o.link_kind == "tun"], found)
    for a in acts:
        if a.obj.kind == "netns":
            steps += [delete_step(v) for v in _veths_to(a.obj.name, found)]
            steps.append(delete_step(a.obj))
    steps += _attachments_down([o for o in links if o.ns is not None], found)
    bridges = [o for o in links if o.ns is None and o.link_kind == "bridge"]
    rest = [o for o in links if o.ns is None and o.link_kind not in ("tun", "bridge")]
    steps += [delete_step(o) for o in rest]
    for a in acts:
        if a.obj.kind in ("addr", "route", "tc redirect", "neigh proxy"):
            o = a.obj
            tool = TC if o.kind == "tc redirect" else IP
            steps.append(OpStep(tool, o.text(DELETE), o.what(DELETE), o.vm, netns=o.ns, ops=[a]))
    for br in sorted(bridges, key=lambda b: b.name):
        what = f'delete bridge "{br.name}"'
        steps.append(OpStep(IP, br.text(DELETE), what, ops=[Act(DELETE, br)]))  # (no VM's)
    return steps


ROUTES6_FIRST = 512
"""from this many taps with IPv6 routes on, a group delete deletes their routes first"""


def _taps_down(taps: list[Any], found: Index) -> list[Step]:
    """One tap deleted; several regrouped, then one group delete (the kernel batches the
    unregister): plan/ops.py's steps, each carrying the operation its line does. Many taps
    of VMs with IPv6 (:data:`ROUTES6_FIRST`): their IPv6 routes deleted first, in the same
    ``ip`` batch. The kernel takes a device's IPv6 routes by walking the whole IPv6 routing
    tree once per device it deletes, so a group delete of N such taps is quadratic in N;
    their routes gone before, it walks a small tree (bench/tap_delete6.py, the ``ip``
    process's CPU at 4000 taps: 2.3 s with every route first, 3.3 s with the /64s only, 5.4 s
    with none; v4-only taps 1.8 s; below a few hundred, no gain to measure)."""
    from fireroute.want.objects import DOOMED_GROUP

    if len(taps) == 1:
        return [delete_step(taps[0])]
    steps = [delete_step(r) for r in _routes6_of(taps, found)]
    steps += [regroup_step(t, DOOMED_GROUP, f'mark tap "{t.name}"') for t in taps]
    if taps:
        steps.append(group_delete_step(DOOMED_GROUP, f"delete {len(taps)} taps"))
    return steps


def _routes6_of(taps: list[Any], found: Index) -> list[Obj]:
    """The IPv6 routes through ``taps`` when there are ROUTES6_FIRST of them: each /64 (as
    found) with the kernel's own routes of its tap (want/tap.py :func:`kernel_routes6`, for
    the tap's gateway as found: a lease's own, or ``fe80::1`` for an older one)."""
    from fireroute.want.netns import Route
    from fireroute.want.objects import Addr

    names = {t.name for t in taps}
    routes = [
        o
        for (kind, _key), o in found.items()
        if kind == "route" and isinstance(o, Route) and o.ns is None and _v6_on_host(o)
        and o.dev in names
    ]  # fmt: skip
    if len(routes) < ROUTES6_FIRST:
        return []
    from ipaddress import IPv6Network

    from fireroute.addressing import gateway6_text
    from fireroute.want.tap import gateway6, kernel_routes6

    gws = {
        o.dev: o.cidr.partition("/")[0]
        for (kind, _key), o in found.items()
        if kind == "addr" and isinstance(o, Addr) and o.ns is None and o.dev in names
        and gateway6(o.cidr)
    }  # fmt: skip
    out: list[Obj] = []
    for route in routes:
        gw = gws.get(str(route.dev)) or gateway6_text(IPv6Network(route.dst))
        out += [route, *kernel_routes6(route, gw)]
    return out


def _veths_to(ns: str, found: Index) -> list[Obj]:
    """The host's veths whose far end is in the namespace ``ns`` (they go with it)."""
    return [
        o
        for (kind, _key), o in found.items()
        if kind == "link" and o.ns is None and (getattr(o, "peer", None) or (None,))[0] == ns
    ]


def _attachments_down(links: list[Link], found: Index) -> list[Step]:
    """Per VM, its links in a namespace (the tap a veth's redirect reaches among them, as
    found) moved to the doomed group and deleted as one group; then the veths' host ends by
    name, should they be left (the namespace end renamed or moved away)."""
    from fireroute.want.objects import DOOMED_GROUP

    by_vm: dict[str | None, list[Link]] = {}
    for link in links:
        by_vm.setdefault(link.vm, []).append(link)
    inside: list[Step] = []
    ends: list[Step] = []
    for vm, own in by_vm.items():
        ns = own[0].ns
        veths = [o for o in own if o.link_kind == "veth"]
        taps = [o for o in own if o.link_kind != "veth"]
        for v in veths:
            r: Any = found.get(("tc redirect", (ns, v.name)))
            tap: Any = found.get(("link", (ns, r.dst))) if r is not None else None
            if tap is not None and all(t.name != tap.name for t in taps):
                taps.append(tap)
        for o in taps + veths:
            step = regroup_step(o, DOOMED_GROUP, f'delete {o.noun} "{o.name}"')
            step.vm, step.netns = vm, ns  # (a tap reached by a redirect: this VM's group)
            inside.append(step)
        inside.append(group_delete_step(DOOMED_GROUP, f'delete the links in "{ns}"', vm, ns))
        ends += [delete_step(_host_end(v, found.values())) for v in veths if v.peer]
    return inside + ends
