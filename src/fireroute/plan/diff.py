"""The one diff: what the host has (``current``, as kernel/read.py finds it) against what the
state file wants (``desired``, want/render.py), both ``{(kind, key): object}``, as a list of
operations (docs/core-migration.md, section 6).

- wanted and absent: ``create`` (reason *missing*);
- both, differing: ``set``, or ``replace`` when what differs cannot change in place (a tap's
  owner, a link's kind, a veth's peer, a set's type) (*differs*); an iptables VM's block with
  a rule missing or out of order is written again whole, in its order;
- found and not wanted: ``delete`` when it is ours (:func:`ours`), as an *orphan* (tagged for
  this state file) or a *stray* (in one of our tables, not tagged for it); a shared object
  (a table, a bridge we made, the conntrack rule, forwarding) only once nothing else uses it.

What goes with a deleted or replaced object (an address with its link, everything in a
namespace, an element with its set and table) gets no operation of its own; a replaced
object's wanted children ride with its operation (``Op.children``).

Pure: no kernel, no state file. Verbs differ only in the scope they read and which
operations they keep (section 9).
"""

from __future__ import annotations

from fireroute import owner
from fireroute.want.objects import FORWARD6_KEY, Link, Obj
from fireroute.want.tables import TABLE_COMMENT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    Key = tuple[str, tuple]
    Index = dict[Key, Obj]

CREATE, SET, REPLACE, DELETE = "create", "set", "replace", "delete"
MISSING, DIFFERS, ORPHAN, STRAY = "missing", "differs", "orphan", "stray"
SHARED_OWNERS = frozenset({TABLE_COMMENT, owner.SHARED})


class Op:
    """``verb`` done to ``obj`` (the wanted object; the found one for a delete) for
    ``reason``. ``have``: the found object a set or replace changes. ``children``: the wanted
    objects that go with a replaced one and are made again with it. ``quiet``: written
    again with others (a rule of an iptables block) and says nothing of its own; ``note``:
    what is wrong, when the kind's words cannot say it (a block out of order). ``who``: the
    VM of ours a found object is keyed on or tagged for. ``inner``: what would have been
    done to the objects under a replaced one (they are made again with it; check says them).
    """

    __slots__ = (
        *("verb", "obj", "reason", "have", "children", "quiet", "note", "who", "inner"),
        "_id",
    )

    def __init__(
        self,
        verb: str,
        obj: Obj,
        reason: str,
        have: Obj | None = None,
        children: tuple[Obj, ...] = (),
        quiet: bool = False,
        note: str = "",
        who: str | None = None,
    ) -> None:
        self.verb = verb
        self.obj = obj
        self.reason = reason
        self.have = have
        self.children = children
        self.quiet = quiet
        self.note = note
        self.who = who
        self.inner: tuple[Op, ...] = ()
        self._id: Key | None = None

    @property
    def id(self) -> Key:
        """(kind, key) of the object, worked out once (an element's key is built anew at
        each ask)."""
        if self._id is None:
            self._id = (self.obj.kind, self.obj.key)
        return self._id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Op) and (self.verb, self.obj, self.reason) == (
            other.verb,
            other.obj,
            other.reason,
        )

    def __repr__(self) -> str:
        return f"Op({self.verb}, {self.obj!r}, {self.reason})"


class Scope:
    """What was read: every object (``vms`` None: check, restore, gc, teardown), or the
    named VMs' and the shared ones (up, down, a check of named VMs). Outside ``ALL`` no
    stray is looked for: only what is tagged for a named VM, and the shared objects."""

    __slots__ = ("vms",)

    def __init__(self, vms: Iterable[str] | None = None) -> None:
        self.vms = None if vms is None else frozenset(vms)

    def covers(self, obj: Obj, vm: str | None) -> bool:
        if self.vms is None:
            return True
        return vm in self.vms if vm is not None else shared_object(obj)


ALL = Scope()


# -- ownership -------------------------------------------------------------------------------


def fields(value: str) -> list[str]:
    """An element's fields, a map element's value's included."""
    return value.replace(" : ", " . ").split(" . ")


def who_fields(set_name: str, value: str) -> list[str]:
    """The fields of an element that can name the VM it belongs to: all of them, but in a
    policy set only the tap (the other is a destination, maybe another VM's address)."""
    every = fields(value)
    return every[:1] if set_name.startswith(("out_deny_", "out_allow_")) else every


KEYED = {"taps": (0,), "vms": (0, 1), "bridged": (1,), "ports": (0,), "addrs": (0, 1)}
"""the sets whose elements name a VM's keys (its tap, its guest or source address): field
positions"""


class Claims:
    """What makes a found element ours beyond its tag: ``keys`` (element fields naming one of
    our VMs: its tap, its guest or source address -> the VM) and ``tables`` ((family, table)
    our VMs use, where an untagged element is ours), read off ``desired`` at the first ask
    (a diff with no found object to judge, as a new VM's up, never reads them)."""

    __slots__ = ("instance", "_desired", "_keys", "_tables", "_seen")

    def __init__(self, instance: str, desired: Index) -> None:
        self.instance = instance
        self._desired = desired
        self._keys: dict[str, str] | None = None
        self._tables: set[tuple] = set()
        self._seen: dict[int, tuple[Obj, str | None, bool]] = {}
        """id(obj) -> (obj, its VM, ours): each worked out once per diff (the object is held
        here, so its id cannot be reused while the claims live)"""

    @property
    def keys(self) -> dict[str, str]:
        if self._keys is None:
            self._read()
        return self._keys  # type: ignore[return-value]

    @property
    def tables(self) -> set[tuple]:
        if self._keys is None:
            self._read()
        return self._tables

    def _read(self) -> None:
        keys: dict[str, str] = {}
        for (kind, _key), obj in self._desired.items():
            if kind == "nft table" and obj.ns is None:
                self._tables.add(obj.key[1:])
            if kind != "nft element" or obj.vm is None:
                continue
            at = fields(obj.value)  # type: ignore[attr-defined]
            for i in KEYED.get(obj.set, ()):  # type: ignore[attr-defined]
                keys.setdefault(at[i], obj.vm)
        self._keys = keys

    def of(self, obj: Obj) -> tuple[str | None, bool]:
        """(:meth:`vm_of`, :func:`ours`) of a found object, worked out once."""
        seen = self._seen.get(id(obj))
        if seen is None or seen[0] is not obj:
            vm = self._vm_of(obj)
            seen = (obj, vm, _ours(obj, self.instance, self, vm))
            self._seen[id(obj)] = seen
        return seen[1], seen[2]

    def vm_of(self, obj: Obj) -> str | None:
        """The VM of ours an object is keyed on or tagged for (None: no VM's)."""
        return self.of(obj)[0]

    def _vm_of(self, obj: Obj) -> str | None:
        if obj.kind == "nft element":
            keys = self.keys
            for f in who_fields(obj.set, obj.value):  # type: ignore[attr-defined]
                if f in keys:
                    return keys[f]
        tag = owner.parse(obj.owner)
        if tag is not None and tag[0] == self.instance and not tag[1].startswith(owner.BRIDGE):
            return tag[1]
        return None


def claims(desired: Index, instance: str) -> Claims:
    """The claims ``desired`` makes: its VMs' keys (from their elements), its tables."""
    return Claims(instance, desired)


def ours(obj: Obj, instance: str, claimed: Claims | None = None) -> bool:
    """Is ``obj`` this state file's business? Its tag (alias, comment, namespace name)
    names ``instance``; a table, its sets and chains carry our comment (their owner, as the
    reader gives it: ``TABLE_COMMENT``); the shared iptables rule; forwarding. An element also
    when it is keyed on one of our VMs, or carries no state file's tag in a table our VMs use
    (``claimed``). Tags written before state files had ids are nobody's."""
    vm = claimed.vm_of(obj) if claimed is not None and obj.kind == "nft element" else None
    return _ours(obj, instance, claimed, vm)


def _ours(obj: Obj, instance: str, claimed: Claims | None, vm: str | None) -> bool:
    """:func:`ours`, with the element's VM (``claimed.vm_of``) worked out (``vm``)."""
    if obj.kind == "forwarding" or obj.owner in SHARED_OWNERS:
        return True
    if claimed is not None and obj.kind == "nft element":
        if vm is not None:
            return True
        if owner.parse(obj.owner) is None:
            return (obj.family, obj.table) in claimed.tables  # type: ignore[attr-defined]
    tag = owner.parse(obj.owner)
    return tag is not None and tag[0] == instance


def shared_object(obj: Obj) -> bool:
    """An object of no one VM: a table's, the shared rule, forwarding, a bridge we made."""
    if obj.kind == "forwarding" or obj.owner in SHARED_OWNERS:
        return True
    tag = owner.parse(obj.owner)
    return tag is not None and tag[1].startswith(owner.BRIDGE)


# -- what goes with what ---------------------------------------------------------------------


def _device(path: str) -> str | None:
    """The device of a per-device sysctl (``net/ipv6/conf/DEV/disable_ipv6``)."""
    parts = path.split("/")
    return parts[3] if len(parts) > 4 and parts[2] == "conf" else None


def parents(obj: Obj) -> list[Key]:
    """What ``obj`` goes with when it is deleted: its link, namespace, set or table."""
    ns = obj.ns
    home = [("netns", (ns,))] if ns is not None else []
    kind = obj.kind
    if kind == "link":
        peer = obj.peer  # type: ignore[attr-defined]
        far = [("link", peer)] if ns is None and peer and peer[0] is not None else []
        return home + far
    if kind in ("addr", "tc redirect"):
        return [("link", (ns, obj.key[1]))]
    if kind == "route":
        dev = obj.dev  # type: ignore[attr-defined]
        return [("link", (ns, dev))] if dev else home
    if kind == "sysctl":
        dev = _device(obj.path)  # type: ignore[attr-defined]
        return [("link", (ns, dev))] if dev else home
    if kind in ("nft set", "nft chain"):
        return [("nft table", obj.key[:3])]
    if kind == "nft element":
        key = obj.key
        return [("nft set", key[:4]), ("nft table", key[:3])]
    return home if kind == "nft table" else []


def _under(obj: Obj, dead: set[Key], current: Index, memo: dict[Key, bool]) -> bool:
    """Does ``obj`` go with one of ``dead`` (directly, or through a parent that does)?"""
    out = False
    for p in parents(obj):
        if p in dead:
            return True
        if p not in memo:
            memo[p] = False  # (a cycle ends here)
            found = current.get(p)
            memo[p] = found is not None and _under(found, dead, current, memo)
        out = out or memo[p]
    return out


# -- in both: what differs -------------------------------------------------------------------

IMMUTABLE = ("link_kind", "peer", "uid", "gid")
"""a link's attributes that cannot change in place: a difference means replace"""
UNKNOWN_PEER = ("?", "")
"""a veth's far end in a namespace that was not read (kernel/read.py): not a difference"""
COMPARED = ("master", "up")
"""a link's attributes compared whatever is wanted; the rest only when wanted (not None)"""
OPTIONAL = ("group", "alias", "mac", "mtu")


def _link_change(have: Obj, want: Obj) -> list[Op]:
    """Replace when the kind, the peer or a tap's owner differs; set when its master, state,
    group, tag, MAC or MTU does (the last four only where fireroute fixes them)."""
    assert isinstance(have, Link) and isinstance(want, Link)

    def differs(a: str) -> bool:
        w, h = getattr(want, a), getattr(have, a)
        return w not in (None, "") and h != UNKNOWN_PEER and _norm(h) != _norm(w)

    owner_differs = want.uid is not None and have.gid != want.gid
    if owner_differs or any(differs(a) for a in IMMUTABLE):
        return [Op(REPLACE, want, DIFFERS, have)]
    if any(getattr(have, a) != getattr(want, a) for a in COMPARED) or any(
        differs(a) for a in OPTIONAL
    ):
        return [Op(SET, want, DIFFERS, have)]
    return []


def _norm(value: object) -> object:
    return value.upper() if isinstance(value, str) and value.count(":") == 5 else value


def _replaced_if_differs(have: Obj, want: Obj) -> list[Op]:
    return [] if have.attrs == want.attrs else [Op(REPLACE, want, DIFFERS, have)]


def _set_if_differs(have: Obj, want: Obj) -> list[Op]:
    return [] if have.attrs == want.attrs else [Op(SET, want, DIFFERS, have)]


CHANGE: dict[str, Callable[[Obj, Obj], list[Op]]] = {
    "link": _link_change,
    "nft set": _replaced_if_differs,
}
"""kind -> the operations for a found object against the wanted one (default: set)"""


def _adopted(want: Obj, have: Obj | None, instance: str) -> bool:
    """A bridge found in place and not ours: used as it is, never set or addressed."""
    return (
        have is not None
        and want.kind == "link"
        and want.link_kind == "bridge"  # type: ignore[attr-defined]
        and not ours(have, instance)
    )


# -- iptables blocks -------------------------------------------------------------------------


def _disorder(rules: list[Obj], at: dict[Key, int]) -> str | None:
    """Why the found ``rules`` (in wanted order) stand out of that order, or None: appended
    rules rise in their chain, inserted ones (each above the one before) fall."""
    by_chain: dict[str, list[Obj]] = {}
    for r in rules:
        by_chain.setdefault(r.chain, []).append(r)  # type: ignore[attr-defined]
    for chain, block in by_chain.items():
        rank = {r.key: i for i, r in enumerate(block)}
        step = -1 if block[0].insert else 1  # type: ignore[attr-defined]
        stand = sorted(block, key=lambda r: step * at[(r.kind, r.key)])
        for before, after in zip(stand, stand[1:], strict=False):
            if rank[after.key] < rank[before.key]:
                return f'{chain} are out of order: "{after.key[1]}" comes after "{before.key[1]}"'
    return None


def _iptables_order(ops: list[Op], current: Index, desired: Index) -> list[Op]:
    """``ops`` with the iptables rules written again where they stand out of order (iptables
    judges a packet by the first rule that ends its journey): the VMs' blocks, then the
    shared rule."""
    rules = [(k, r) for k, r in desired.items() if k[0] == "iptables rule"]
    if not rules:
        return ops
    at = {k: i for i, k in enumerate(current)}  # (where each found object stands)
    return _blocks(ops, current, rules, at) + _shared_first(current, rules, at)


def _blocks(ops: list[Op], current: Index, rules: list[tuple], at: dict[Key, int]) -> list[Op]:
    """An iptables VM's rules stand in one block, in order: a block with a rule missing or
    out of order is written again whole (every rule of it replaced or created, in order)."""
    by_vm: dict[str, list[Obj]] = {}
    for _, obj in rules:
        if obj.vm is not None:
            by_vm.setdefault(obj.vm, []).append(obj)
    made = {op.id for op in ops if op.verb == CREATE}
    out = ops
    for vm, block in by_vm.items():
        found = [r for r in block if (r.kind, r.key) not in made]
        why = _disorder(found, at) if len(found) == len(block) else None
        if not found or (len(found) == len(block) and why is None):
            continue
        note = f'iptables rules of vm "{vm}" in {why}' if why else ""
        ids = {(r.kind, r.key) for r in block}
        out = [op for op in out if op.id not in ids]
        for r in block:
            if (r.kind, r.key) in made:
                out.append(Op(CREATE, r, MISSING))
            else:
                have = current[(r.kind, r.key)]
                out.append(Op(REPLACE, r, DIFFERS, have, quiet=not note, note=note))
                note = ""  # (said once, by the first)
    return out


def _shared_first(current: Index, rules: list[tuple], at: dict[Key, int]) -> list[Op]:
    """The shared conntrack rule stands above every VM's appended rule of its chain (a VM's
    ``-o <tap>`` DROP would drop the replies to its guest): found below one, it is written
    again above them."""
    out = []
    for k, shared in rules:
        if shared.vm is not None or k not in current:
            continue
        where = (shared.table, shared.chain)
        above = [
            current[j]
            for j, r in rules
            if r.vm is not None and j in current and at[j] < at[k]
            and not r.insert and (r.table, r.chain) == where
        ]  # fmt: skip
        if above:
            first = min(above, key=lambda r: at[(r.kind, r.key)])
            note = (
                f'shared iptables rule is out of order: "{shared.saved}" comes after '
                f'"{first.saved}"'  # type: ignore[attr-defined]
            )
            out.append(Op(REPLACE, shared, DIFFERS, current[k], note=note))
    return out


# -- found and not wanted --------------------------------------------------------------------


def _port_left(obj: Obj, current: Index, gone: set[Key]) -> bool:
    """A bridge still has a port that is not going."""
    name = obj.key[1]
    return any(
        k[0] == "link" and k not in gone and o.ns == obj.ns and getattr(o, "master", 0) == name
        for k, o in current.items()
    )


def _foreign_element(obj: Obj, current: Index, claimed: Claims) -> bool:
    """A table holds an element that is not ours (another state file's)."""
    table = obj.key
    return any(
        k[0] == "nft element" and k[1][:3] == table and not claimed.of(o)[1]
        for k, o in current.items()
    )


def _tagged_left(kind: str, current: Index, gone: set[Key]) -> bool:
    """An object of ``kind`` tagged by fireroute (any state file's) stays."""
    return any(
        k[0] == kind and k not in gone and owner.parse(o.owner) is not None
        for k, o in current.items()
    )


def _v6_tap_left(current: Index, gone: set[Key]) -> bool:
    """A link of fireroute's (any state file's) that stays is the tap of a VM with IPv6
    (want/tap.py ``v6_tap``, over its IPv6 sysctls and addresses as found: kernel/read.py
    finds those of such a tap only)."""
    from fireroute.want.tap import ADDR_GEN6, DISABLE6, v6_tap

    staying = [
        o.name  # type: ignore[attr-defined]
        for k, o in current.items()
        if k[0] == "link" and o.ns is None and k not in gone and owner.parse(o.owner)
    ]
    if not staying:
        return False
    cidrs: dict[str, list[str]] = {}
    for k, o in current.items():
        if k[0] == "addr" and o.ns is None and o.nodad:  # type: ignore[attr-defined]
            cidrs.setdefault(k[1][1], []).append(k[1][2])

    def value(path: str) -> str | None:
        found = current.get(("sysctl", (None, path)))
        return None if found is None else found.value  # type: ignore[attr-defined]

    return any(
        v6_tap(value(DISABLE6.format(dev)), value(ADDR_GEN6.format(dev)), cidrs.get(dev, ()))
        for dev in staying
    )


def _bridged6_left(current: Index, gone: set[Key], dev: str | None = None) -> bool:
    """A bridge guest's /64 (an IPv6 route onto a bridge, of any state file: kernel/read.py
    ``_bridge_routes``) stays, onto ``dev`` when given."""
    bridges = {
        o.name  # type: ignore[attr-defined]
        for k, o in current.items()
        if k[0] == "link" and o.ns is None and o.link_kind == "bridge"  # type: ignore[attr-defined]
    }
    return any(
        k[0] == "route" and k not in gone and o.ns is None and ":" in o.dst  # type: ignore[attr-defined]
        and (o.dev == dev if dev is not None else o.dev in bridges)  # type: ignore[attr-defined]
        for k, o in current.items()
    )  # fmt: skip


def others_use(obj: Obj, current: Index, gone: set[Key], claimed: Claims) -> bool:
    """Does something else still use a shared object found and not wanted? A table: an
    element not ours; a bridge: a port that stays; the conntrack rule: another tagged rule;
    forwarding: a link of fireroute's that stays, for IPv6's a tap with IPv6 on or a bridge
    guest with IPv6 (or what it was before is not known); a bridge's IPv6 gateway
    (``fe80::1``): a guest with IPv6 on that bridge, of any state file."""
    if obj.kind == "addr":
        cidr = obj.cidr  # type: ignore[attr-defined]
        return ":" in cidr and _bridged6_left(current, gone, obj.dev)  # type: ignore[attr-defined]
    if obj.kind == "nft table":
        return _foreign_element(obj, current, claimed)
    if obj.kind == "link":
        return _port_left(obj, current, gone)
    if obj.kind == "iptables rule":
        return _tagged_left("iptables rule", current, gone)
    if obj.kind == "forwarding":
        before = obj.before  # type: ignore[attr-defined]
        unknown = before is None or before == obj.value  # type: ignore[attr-defined]
        if obj.key[1] == FORWARD6_KEY:
            return unknown or _v6_tap_left(current, gone) or _bridged6_left(current, gone)
        return unknown or _tagged_left("link", current, gone)
    return False


def _reason(obj: Obj, instance: str) -> str:
    """An orphan is tagged for this state file (or shared); a stray sits in our table."""
    if obj.kind in ("nft set", "nft chain", "nft element") and obj.owner == TABLE_COMMENT:
        return STRAY
    tag = owner.parse(obj.owner)
    mine = tag is not None and tag[0] == instance
    return ORPHAN if mine or obj.owner in SHARED_OWNERS or obj.kind == "forwarding" else STRAY


def _unwanted(
    current: Index, desired: Index, scope: Scope, claimed: Claims
) -> list[tuple[Key, Obj, str | None]]:
    """Found objects that are ours, not wanted, and within the scope: (key, object, its VM)."""
    out = []
    for k, o in current.items():
        if k in desired:
            continue
        who, mine = claimed.of(o)
        if mine and scope.covers(o, who):
            out.append((k, o, who))
    return out


def _shared(obj: Obj) -> bool:
    """Deleted only once nothing else uses it (a table's set or chain is not: it is ours)."""
    return shared_object(obj) and obj.kind not in ("nft set", "nft chain")


STRUCTURE = ("addr", "nft set", "nft chain")
"""kinds that are part of a shared object (a bridge's address, a table's sets and chains):
kept with it while it is kept"""


def _deletes(current: Index, desired: Index, scope: Scope, claimed: Claims) -> list[Op]:
    """Deletes, in found order: the VMs' objects first decide what is going, then each
    shared object goes unless something else still uses it (and what is part of it stays
    with it)."""
    # a device's sysctl no lease asks for is left as found: it goes with its device, and
    # another program may have set it on ours (a chained CNI plugin's route_localnet)
    found = [f for f in _unwanted(current, desired, scope, claimed) if f[1].kind != "sysctl"]
    shared = [(k, o) for k, o, _ in found if _shared(o)]
    gone = {k for k, _, _ in found}.difference(k for k, _ in shared)
    kept: set[Key] = set()
    for k, o in shared:
        used = others_use(o, current, gone, claimed)
        (kept if used else gone).add(k)
    instance = claimed.instance
    return [
        Op(DELETE, o, _reason(o, instance), who=who)
        for k, o, who in found
        if k in gone and not (kept and o.kind in STRUCTURE and any(p in kept for p in parents(o)))
    ]


# -- the diff --------------------------------------------------------------------------------


def _changes(current: Index, desired: Index, instance: str) -> list[Op]:
    """Creates and changes, in wanted order (an adopted bridge's address left out)."""
    both = current.keys() & desired.keys()  # (a walk over the smaller of the two)
    adopted = {k for k in both if _adopted(desired[k], current[k], instance)}
    ops = []
    for k, want in desired.items():
        have = current.get(k)
        if adopted and (k in adopted or any(p in adopted for p in parents(want))):
            continue
        if have is None:
            op = Op(CREATE, want, MISSING)
            op._id = k  # (its key, known: an element's is built anew at each ask)
            ops.append(op)
        else:
            ops += CHANGE.get(want.kind, _set_if_differs)(have, want)
    return ops


def _cascade(ops: list[Op], current: Index, desired: Index) -> list[Op]:
    """What goes with a deleted or replaced object gets no operation of its own; a replaced
    object's wanted children ride with it (made again with it)."""
    dead = {op.id for op in ops if op.verb in (DELETE, REPLACE) and op.obj.kind != "iptables rule"}
    if not dead:
        return ops
    both = {**desired, **current}
    memo: dict[Key, bool] = {}
    out = [op for op in ops if not _under(op.have or op.obj, dead, both, memo)]
    for i, op in enumerate(out):
        if op.verb == REPLACE and op.id in dead:
            kids = tuple(o for o in desired.values() if _under(o, {op.id}, both, {}))
            out[i] = Op(REPLACE, op.obj, op.reason, op.have, kids, op.quiet, op.note)
            out[i].inner = tuple(o for o in ops if _under(o.have or o.obj, {op.id}, both, {}))
    return out


def diff(current: Index, desired: Index, scope: Scope = ALL, instance: str = "") -> list[Op]:
    """The operations that make ``current`` what ``desired`` says, for the state file
    ``instance``: creates and changes in wanted order, then deletes in found order."""
    claimed = claims(desired, instance)
    ops = _iptables_order(_changes(current, desired, instance), current, desired)
    return _cascade(ops + _deletes(current, desired, scope, claimed), current, desired)
