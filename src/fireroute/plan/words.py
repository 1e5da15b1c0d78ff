"""An operation of the diff (plan/diff.py) in words, for ``check``: what is wrong, said as
``check`` has always said it (the sentences of its former repair/problems.py and extras.py), so
that check can become the diff in words without its readers noticing.

Pure. The names of a tap's owner come from ``Context.user`` (the caller looks them up).
"""

from __future__ import annotations

from fireroute import owner
from fireroute.plan.diff import CREATE, DELETE, ORPHAN, REPLACE, Op, parents
from fireroute.want.iptables import IptRule
from fireroute.want.netns import Netns, Route, TcRedirect
from fireroute.want.nft import NftElement
from fireroute.want.objects import (
    FORWARD6_KEY,
    FORWARD_KEY,
    Addr,
    Forwarding,
    Link,
    NeighProxy,
    Sysctl,
)
from fireroute.want.tables import NftChain, NftSet, NftTable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from fireroute.plan.diff import Index

UNOWNED = "(any local user could attach to an unowned tap)"


def _number(uid: int | None, by_group: bool = False) -> str | None:
    return None if uid is None else str(uid)


class Context:
    """What the words need beyond the operation: ``desired`` (a per-device sysctl's link),
    ``user(uid, by_group)`` (an owner's name), ``leased`` (the names of this state file's
    VMs: an element of one of them elsewhere "is not where" it has it), ``named`` (VMs were
    named: what no lease asks for is said under the VM, as what it has beyond its lease)."""

    __slots__ = ("desired", "user", "leased", "named")

    def __init__(
        self,
        desired: Index | None = None,
        user: Callable[[int | None, bool], str | None] = _number,
        leased: Iterable[str] = (),
        named: bool = False,
    ) -> None:
        self.desired = desired or {}
        self.user = user
        self.leased = frozenset(leased)
        self.named = named


PLAIN = Context()


# -- links -----------------------------------------------------------------------------------


def _label(link: Link) -> str:
    """How check names a link before its name: ``tap``, ``veth``, ``bridge``; in a clone's
    namespace ``tap`` or ``veth in NS:``; in a CNI namespace (a path) ``veth in "NS":``."""
    noun = link.noun
    if link.ns is None or (noun == "tap" and not link.ns.startswith("/")):
        return noun
    return f'{noun} in "{link.ns}":' if link.ns.startswith("/") else f"{noun} in {link.ns}:"


def _who(link: Link) -> str:
    """How check names a link whose MTU is wrong."""
    name = link.name
    return f'{link.noun} "{name}"' if link.ns is None else f'"{name}" in "{link.ns}"'


def _replaced_link(have: Link, want: Link, ctx: Context) -> list[str]:
    dev = want.name
    if have.link_kind != want.link_kind:
        return [f'"{dev}" is a {have.link_kind or "plain"} link, not a {want.link_kind}']
    out = []
    if have.uid != want.uid:
        had = ctx.user(have.uid, False) or "nobody"
        out.append(f'tap "{dev}" is owned by {had}, not {ctx.user(want.uid, False)} {UNOWNED}')
    if have.gid != want.gid:
        had = ctx.user(have.gid, True) or "none"
        out.append(f'tap "{dev}" has group {had}, not {ctx.user(want.gid, True)}')
    if want.peer and have.peer != want.peer:
        out.append(f'{_label(want)} "{dev}" is not joined to "{want.peer[1]}"')
    return out


def _set_link(h: Link, w: Link) -> list[str]:
    what, dev = _label(w), w.name
    out = []
    if w.mac and str(h.mac or "").upper() != w.mac.upper():
        out.append(f'{what} "{dev}" has MAC {str(h.mac).lower()}, not {w.mac}')
    if h.master != w.master:
        out.append(f'{what} "{dev}" is not attached to bridge "{w.master}"')
    if not h.up:
        out.append(f'{what} "{dev}" is down')
    if w.alias and h.alias != w.alias:
        out.append(f'{what} "{dev}" does not carry owner tag {w.alias}')
    if w.group is not None and h.group != w.group:
        out.append(f'{what} "{dev}" is not in group {w.group}')
    if w.mtu and h.mtu != w.mtu:
        out.append(f"{_who(w)} has mtu {h.mtu}, not {w.mtu}")
    return out


def link(op: Op, ctx: Context) -> list[str]:
    obj = op.obj
    assert isinstance(obj, Link)
    if op.verb == CREATE:
        return [f'{_label(obj)} "{obj.name}" is missing']
    if op.verb == DELETE:
        tag = owner.parse(obj.owner)
        name = tag[1] if tag else ""
        if name.startswith(owner.BRIDGE):
            return [f'link "{obj.name}" (a bridge of this state file) has no vm']
        return [f'link "{obj.name}" tagged for vm "{name}" has no lease']
    assert isinstance(op.have, Link)
    if op.verb == REPLACE:
        return _replaced_link(op.have, obj, ctx)
    return _set_link(op.have, obj)


def netns(op: Op, ctx: Context) -> list[str]:
    assert isinstance(op.obj, Netns)
    name = op.obj.name
    return [
        f'namespace "{name}" is missing'
        if op.verb == CREATE
        else f'namespace "{name}" has no lease'
    ]


def addr(op: Op, ctx: Context) -> list[str]:
    from fireroute.want.tap import gateway6

    a = op.obj
    assert isinstance(a, Addr)
    if op.verb == CREATE and gateway6(a.cidr):  # (want/tap.py ``ipv6_on``)
        return [f'"{a.dev}" lacks address {a.cidr} (its guest\'s IPv6 gateway)']
    if op.verb == CREATE:
        return [f'"{a.dev}" lacks address {a.cidr}']
    if a.cidr.startswith("fe80:") and a.noun == "tap" and not gateway6(a.cidr):
        return [  # (read only on a tap with IPv6 on)
            f'tap "{a.dev}" has link-local address {a.cidr} beside its gateway, which no '
            "lease asks for (the kernel adds one when carrier comes before addr_gen_mode is 1)"
        ]
    return [f'"{a.dev}" has address {a.cidr}, which no lease asks for']


def route(op: Op, ctx: Context) -> list[str]:
    r = op.obj
    assert isinstance(r, Route)
    if op.verb == DELETE:
        return [f"route {r.shown()} has no lease"]
    if r.ns is not None and r.dst in ("default", "::/0"):
        return [f'namespace "{r.ns}" has no default route via {r.via}']
    if r.ns is not None and not r.ns.startswith("/"):  # (a clone's)
        return [f'namespace "{r.ns}" has no route {r.shown()}']
    if r.via:
        return [f"host route {r.shown()} is missing"]
    return [f"host route {r.dst} dev {r.dev} is missing"]


def sysctl(op: Op, ctx: Context) -> list[str]:
    s = op.obj
    assert isinstance(s, Sysctl)
    path = s.path
    dev = path.split("/")[3] if "/conf/" in path else ""
    if op.verb == DELETE:
        return [f"sysctl {path} is {s.value}, which no lease asks for"]
    if path.endswith("/disable_ipv6") and s.value == "0":
        return [f'IPv6 is off on tap "{dev}" (its guest has no IPv6)']
    if path.endswith("/disable_ipv6"):
        found = ctx.desired.get(("link", (s.ns, dev)))
        noun = found.noun if isinstance(found, Link) else "tap"
        return [f'IPv6 is on for {noun} "{dev}" (guests could reach the host over it)']
    if path.endswith("/addr_gen_mode"):
        had = f"is {op.have.value}, not" if isinstance(op.have, Sysctl) else "is not"
        return [
            f'addr_gen_mode of tap "{dev}" {had} {s.value} (the kernel would give it a '
            "link-local address of its own)"
        ]
    if path.endswith("/route_localnet"):
        return [f'route_localnet is off on "{dev}" (its 127.0.0.1 ports cannot reach the guest)']
    if path.endswith("/proxy_ndp"):
        return [f'proxy_ndp is off on uplink "{dev}" (its proxied guests are not reached)']
    if s.ns is not None and path in (FORWARD_KEY, FORWARD6_KEY):
        family = "IPv4" if path == FORWARD_KEY else "IPv6"
        return [f'{family} forwarding is off in namespace "{s.ns}"']
    return [f"sysctl {path} is not {s.value}"]


def redirect(op: Op, ctx: Context) -> list[str]:
    r, where = op.obj, f'in "{op.obj.ns}"'
    assert isinstance(r, TcRedirect)
    lost = f'"{r.src}" {where} does not redirect to "{r.dst}"'
    if op.verb == CREATE:
        return [lost]
    have = op.have if isinstance(op.have, TcRedirect) else r
    foreign = f'"{r.src}" {where} has a foreign redirect to "{have.dst}"'
    return [foreign] if op.verb == DELETE else [lost, foreign]


# -- nftables --------------------------------------------------------------------------------


def _where(obj: NftSet | NftChain) -> str:
    """A table as check names it beside a chain or set: ``ip t``, ``ip t in NS``."""
    at = f" in {obj.ns}" if obj.ns is not None else ""
    return f"{obj.family} {obj.table}{at}"


def table(op: Op, ctx: Context) -> list[str]:
    t = op.obj
    assert isinstance(t, NftTable)
    name = t.name if t.family == "ip" else f"{t.family} {t.name}"
    if op.verb == DELETE:
        return [f'nftables table "{t.family} {t.name}" has no vm']
    if t.ns is not None:
        return [f"nftables table {t.family} {t.name} in {t.ns} is missing"]
    return [f'nftables table "{name}" is missing']


def _part(op: Op) -> list[str]:
    """A set or chain of a table missing, or in it and not fireroute's (else nothing)."""
    obj = op.obj
    assert isinstance(obj, NftSet | NftChain)
    what = f"{'set' if isinstance(obj, NftSet) else 'chain'} {obj.name} of {_where(obj)}"
    if op.verb == CREATE:
        return [f"{what} is missing"]
    return [f"{what} is not fireroute's"] if op.verb == DELETE else []


def nft_set(op: Op, ctx: Context) -> list[str]:
    s = op.obj
    assert isinstance(s, NftSet)
    where = _where(s)
    if op.verb in (CREATE, DELETE):
        return _part(op)
    assert isinstance(op.have, NftSet)
    return [f"set {s.name} of {where} is of type {op.have.type}, not {s.type}"]


def chain(op: Op, ctx: Context) -> list[str]:
    c = op.obj
    assert isinstance(c, NftChain)
    where = _where(c)
    if op.verb in (CREATE, DELETE):
        return _part(op)
    have = op.have
    assert isinstance(have, NftChain)
    out = []
    if have.header != c.header:
        out.append(
            f'chain {c.name} of {where} is "{have.header or "a regular chain"}", '
            f'not "{c.header or "a regular chain"}"'
        )
    if have.rules != c.rules:
        missing = [f'lacks "{r}"' for r in c.rules if r not in have.rules]
        extra = [f'has foreign rule "{r}"' for r in have.rules if r not in c.rules]
        out.append(
            f"chain {c.name} of {where}: {'; '.join(missing + extra) or 'rules out of order'}"
        )
    return out


def element(op: Op, ctx: Context) -> list[str]:
    e = op.obj
    assert isinstance(e, NftElement)
    family = "" if e.family == "ip" else f"{e.family} "
    at = f"{family}{e.table}/{e.set}"
    if op.verb == CREATE:
        return [f"nft set {at} lacks {e.value}"]
    if op.reason == ORPHAN and not ctx.named:
        tag = owner.parse(e.owner)
        name = tag[1] if tag else ""
        why = f'is not where vm "{name}" has it' if name in ctx.leased else "has no lease"
        return [f"element {e.value} of set {e.family} {e.table} {e.set} {why}"]
    whose = "" if op.who else " (no vm)"
    return [f"nft set {at} has {e.value}, which no lease asks for{whose}"]


# -- iptables, forwarding --------------------------------------------------------------------


def rule(op: Op, ctx: Context) -> list[str]:
    r = op.obj
    assert isinstance(r, IptRule)
    shared = r.owner == owner.SHARED
    if op.verb == CREATE:
        return [f"{'shared iptables rule' if shared else 'iptables rule'} missing: {r.saved}"]
    if op.verb == REPLACE:
        return [op.note] if op.note else []
    if shared:
        return [f"shared iptables rule has no vm: {r.saved}"]
    if ctx.named:
        return [f"iptables rule no lease asks for: {r.saved}"]
    tag = owner.parse(r.owner)
    name = tag[1] if tag else ""
    if name in ctx.leased:
        return [f'iptables rule is not one vm "{name}" has: {r.saved}']
    return [f"iptables rule has no lease: {r.saved}"]


def neigh_proxy(op: Op, ctx: Context) -> list[str]:
    p = op.obj
    assert isinstance(p, NeighProxy)
    if op.verb == DELETE:
        return [f'"{p.dev}" answers neighbour solicitations for {p.addr}, which no lease asks for']
    return [f'"{p.dev}" does not answer neighbour solicitations for {p.addr} (proxy NDP)']


def forwarding(op: Op, ctx: Context) -> list[str]:
    assert isinstance(op.obj, Forwarding)
    family = "IPv4" if op.obj.path == FORWARD_KEY else "IPv6"
    if op.verb == DELETE:
        return [f"{family} forwarding is on, which no vm needs (it was {op.obj.before})"]
    return [f"{family} forwarding is off"]


WORDS: dict[str, Callable[[Op, Context], list[str]]] = {
    "link": link,
    "netns": netns,
    "addr": addr,
    "route": route,
    "sysctl": sysctl,
    "tc redirect": redirect,
    "nft table": table,
    "nft set": nft_set,
    "nft chain": chain,
    "nft element": element,
    "iptables rule": rule,
    "forwarding": forwarding,
    "neigh proxy": neigh_proxy,
}


def words(op: Op, ctx: Context = PLAIN) -> list[str]:
    """What ``op`` mends, as check says it (nothing for an op written again only with others)."""
    if op.quiet:
        return []
    inner = [w for o in op.inner for w in words(o, ctx)]  # under a replaced object
    return WORDS[op.obj.kind](op, ctx) + inner


def said(ops: list[Op], ctx: Context = PLAIN) -> list[tuple[Op, list[str]]]:
    """Each op with its words; an object missing with the object it goes with (an address
    with its tap, an element with its table) is said by that object alone."""
    made = {op.id for op in ops if op.verb == CREATE}
    return [
        (op, words(op, ctx))
        for op in ops
        if not (op.verb == CREATE and any(p in made for p in parents(op.obj)))
    ]
