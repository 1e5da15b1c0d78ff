"""An in-memory host holding the objects of want/ and applying operations to them as the kernel
does, so that what fireroute decides can be tried without root (docs/core-migration.md §8).

An operation is anything with ``verb`` (create, set, replace, delete) and ``obj``. A group is
what one process of the executor runs: ``ip``/``tc`` lines stop at the first failure unless
forced; sysctls are written one by one; an nft script or an iptables-restore input is
all-or-nothing. Each operation's outcome is a word of kernel/kinds.py (or ``ok``,
``skipped``, ``undone``). tests/kernel/test_fake_parity.py runs the same operations against
a throwaway namespace and compares, so the fake cannot drift from the kernel.

Where the kernel and a first guess differ, the fake follows the kernel: ``add element`` of an
element already there is a no-op, an iptables rule may be appended twice, ``link del`` of a
tap a VMM holds succeeds (the VMM loses it: :attr:`Fake.held`), a set a rule refers to (or a
chain a rule jumps to) is busy.
"""

from __future__ import annotations

import copy
import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from fireroute.kernel import observe
from fireroute.kernel.apply import InjectedFault
from fireroute.kernel.kinds import BUSY, DENIED, EXISTS, MISSING, OK, OTHER
from fireroute.kernel.run import Result
from fireroute.want.objects import FORWARD6_KEY, FORWARD_KEY, Addr, Link, Obj, Sysctl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, Protocol

    class Op(Protocol):
        verb: str
        obj: Any


SKIPPED, UNDONE = "skipped", "undone"
"""not run (an earlier line of its ``ip`` group failed); run, but its all-or-nothing group
failed, so nothing of it stayed"""
NFT_KINDS = ("nft table", "nft chain", "nft set", "nft element")
TOOL = {"tc redirect": "tc", "sysctl": "sysctl", "forwarding": "sysctl"}
TOOL.update({k: "nft" for k in NFT_KINDS})
TOOL.update({"iptables rule": "iptables", "iptables chain": "iptables"})
ATOMIC = ("nft", "iptables")
GOES_ON = ("sysctl", "nft")
"""tools that go on past a failed line: sysctl writes each, nft reports every failure"""
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}


class Failed(Exception):
    """One operation failed: ``kind`` says how."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind


class Killed(BaseException):
    """``kill@K``: the process applying the plan died right after its K-th group (no caller
    catches it, as none survives a SIGKILL)."""


def ident(obj: Obj) -> tuple:
    """An object's place in the host: (kind, key); keys of two kinds may look alike."""
    return (obj.kind, obj.key)


def tool(obj: Obj) -> str:
    """The program that does an operation on ``obj``."""
    return TOOL.get(obj.kind, "ip")


class FakeSet(Obj):
    """A set of a table (``type`` as ``nft`` declares it): the container of its elements."""

    __slots__ = ("family", "table", "name", "type")
    kind = "nft set"

    def __init__(self, ns: str | None, family: str, table: str, name: str, type: str) -> None:
        super().__init__(ns, "", None)
        self.family, self.table, self.name, self.type = family, table, name, type

    @property
    def key(self) -> tuple:
        return (self.ns, self.family, self.table, self.name)

    def text(self, verb: str) -> str:
        if verb == "delete":
            return f"delete set {self.family} {self.table} {self.name}\n"
        from fireroute.want.tables import declared

        return f"add set {self.family} {self.table} {self.name} {{ {declared(self.type)}; }}\n"


def line(obj: Any, verb: str) -> str:
    """The command line doing ``verb`` to ``obj`` (an nft element is added: ``add element``
    of one already there changes nothing, which is what fireroute writes)."""
    kind = obj.kind
    if kind == "nft table":
        head = f"table {obj.family} {obj.name}"
        if verb == "delete":
            return f"delete {head}\n"
        return f'{"create" if verb == "create" else "add"} {head} {{ comment "fireroute"; }}\n'
    if kind == "nft chain":
        head = f"chain {obj.family} {obj.table} {obj.name}"
        if verb == "delete":
            return f"delete {head}\n"
        rules = "".join(f"add rule {obj.family} {obj.table} {obj.name} {r}\n" for r in obj.rules)
        return f"{'create' if verb == 'create' else 'add'} {head} {{ {obj.header} }}\n" + rules
    if kind == "nft element":
        return str(obj.text("delete" if verb == "delete" else "add"))
    if kind == "forwarding":
        return f"{getattr(obj, 'path', FORWARD_KEY)}={obj.value}"
    if kind == "iptables rule":
        return f"-t {obj.table} {obj.text(verb)}"
    return str(obj.text(verb))


# -- what an object lives in (it goes with it) and what it needs (to be made) --------------


def _netns(obj: Obj) -> list[tuple]:
    return [("netns", (obj.ns,))] if obj.ns is not None else []


def _link(ns: str | None, name: str) -> tuple:
    return ("link", (ns, name))


def _device(path: str) -> str | None:
    """A per-device sysctl's device (``net/ipv6/conf/DEV/...``), if it is one."""
    parts = path.replace(".", "/").split("/")
    if len(parts) > 4 and parts[:3] in (["net", "ipv4", "conf"], ["net", "ipv6", "conf"]):
        return None if parts[3] in ("all", "default") else parts[3]
    return None


def _table(obj: Any) -> tuple:
    return ("nft table", (obj.ns, obj.family, obj.table))


PARENTS: dict[str, Callable[[Any], list[tuple]]] = {
    "link": _netns,
    "addr": lambda o: [*_netns(o), _link(o.ns, o.dev)],
    "route": lambda o: [*_netns(o), *([_link(o.ns, o.dev)] if o.dev else [])],
    "sysctl": lambda o: [*_netns(o), *[_link(o.ns, d) for d in [_device(o.path)] if d]],
    "tc redirect": lambda o: [*_netns(o), _link(o.ns, o.src)],
    "nft table": _netns,
    "nft set": lambda o: [_table(o)],
    "nft chain": lambda o: [_table(o)],
    "nft element": lambda o: [_table(o), ("nft set", (o.ns, o.family, o.table, o.set))],
}
"""the objects each kind lives in: missing, it cannot be made; deleted, it goes too"""


class Fake:
    """The host: ``objs`` (insertion-ordered, by :func:`ident`), a count of iptables rules
    appended more than once, the taps a VMM holds, the root namespace's forwarding (IPv4's,
    and IPv6's: ``forwarding6``), and a route table (``routes``: destination, device, type,
    table) for :meth:`probe`.

    ``fault`` is FIREROUTE_FAULT's form (``fail@K``, ``kill@K``): right after the K-th group
    applied, :class:`~fireroute.kernel.apply.InjectedFault` is raised, or :class:`Killed`."""

    def __init__(self, fault: str = "") -> None:
        self.objs: dict[tuple, Obj] = {}
        self.copies: dict[tuple, int] = {}
        self.held: set[tuple[str | None, str]] = set()
        self.forwarding = "0"
        self.forwarding6 = "0"
        self.routes: list[tuple[IPv4Network, str, str, str]] = []
        self.fault = fault
        self.count = 0

    # -- seeding -------------------------------------------------------------------------
    def seed(self, *objs: Obj) -> None:
        """Put objects in place as another program (or instance) left them, unchecked."""
        for obj in objs:
            self.objs[ident(obj)] = obj

    def hold(self, name: str, ns: str | None = None) -> None:
        """A VMM has the tap open."""
        self.held.add((ns, name))

    def seed_route(self, dst: str, dev: str, type: str = "unicast", table: str = "main") -> None:
        self.routes.append((IPv4Network(dst), dev, type, table))

    def fail_at(self, k: int) -> None:
        self.fault, self.count = f"fail@{k}", 0

    def kill_at(self, k: int) -> None:
        self.fault, self.count = f"kill@{k}", 0

    # -- reading -------------------------------------------------------------------------
    def read(self, vms: Iterable[str] | None = None, instance: str | None = None) -> dict:
        """ident -> object: all, or those of the VMs named (of ``instance``, if given) and the
        shared ones (no VM)."""
        if vms is None:
            return dict(self.objs)
        names = set(vms)
        prefix = f"{instance}:" if instance else ""
        return {
            k: o
            for k, o in self.objs.items()
            if o.vm is None or (o.vm in names and o.owner.startswith(prefix))
        }

    def dump(self) -> str:
        """The host as the command lines that would make it, one object after another."""
        out: list[str] = []
        where: str | None = None
        for k, obj in self.objs.items():
            if obj.ns != where and obj.kind != "netns":
                where = obj.ns
                out.append(f"# in {where or 'the root namespace'}")
            made = obj.kind != "link" or getattr(obj, "made", True)
            text = line(obj, "create") if made else ""
            text += "\n" + obj.text("set") if obj.kind == "link" else ""
            out += [text.strip()] * (1 + self.copies.get(k, 0))
        out += ["# in the root namespace"] if where is not None else []
        out.append(f"{FORWARD_KEY}={self.forwarding}")
        if self.forwarding6 != "0":  # (a host that never had IPv6 forwarding: as before)
            out.append(f"{FORWARD6_KEY}={self.forwarding6}")
        return "\n".join(t for t in out if t) + "\n"

    def get(self, obj: Obj) -> Any:
        return self.objs.get(ident(obj))

    def require_net_admin(self, action: str) -> None:
        """The fake lets anyone change it."""

    # -- applying ------------------------------------------------------------------------
    def apply(self, group: Sequence[Op], force: bool = False) -> list[str]:
        """Apply one group (all of one tool), as one process would: each operation's outcome."""
        tools = {tool(op.obj) for op in group}
        assert len(tools) <= 1, f"one tool per group: {tools}"
        atomic = bool(tools & set(ATOMIC))
        saved = (dict(self.objs), dict(self.copies), set(self.held), self.forwarding,
                 self.forwarding6)  # fmt: skip
        out: list[str] = []
        stopped = False
        for op in group:
            if stopped:
                out.append(SKIPPED)
                continue
            try:
                self.do(op.verb, op.obj)
                out.append(OK)
            except Failed as exc:
                out.append(exc.kind)
                stopped = not force and not tools & set(GOES_ON)
        if atomic and any(o not in (OK, SKIPPED) for o in out):
            self.objs, self.copies, self.held, self.forwarding, self.forwarding6 = saved
            out = [UNDONE if o == OK else o for o in out]
        self._fault_point()
        return out

    def _fault_point(self) -> None:
        self.count += 1
        kind, _, at = self.fault.partition("@")
        if at.isdigit() and int(at) == self.count:
            if kind == "kill":
                raise Killed(f"killed after group {self.count}")
            raise InjectedFault("continue", f"injected fault after process {self.count}")

    def do(self, verb: str, obj: Any) -> None:
        """One operation; :class:`Failed` says why it could not be done (nothing changed)."""
        if verb == "replace":
            self.do("delete", obj)
            self.do("create", obj)
            return
        if obj.kind == "forwarding":
            if verb == "delete":
                raise Failed(OTHER, "forwarding is set back, never deleted")
            if getattr(obj, "path", FORWARD_KEY) == FORWARD6_KEY:
                self.forwarding6 = str(obj.value)
            else:
                self.forwarding = str(obj.value)
            return
        if verb == "delete":
            (self._delete_group if obj.kind == "link group" else self._delete)(obj)
            return
        held = verb == "set" and ident(obj) in self.objs  # (held, its home is: a namespace
        # seeded without its object is another program's, as a CNI runtime's)
        for parent in [] if held else PARENTS.get(obj.kind, lambda o: [])(obj):
            if parent not in self.objs:
                raise Failed(MISSING, f"{parent} is not there")
        {"create": self._create, "set": self._set}[verb](obj)

    # -- create, set ---------------------------------------------------------------------
    def _create(self, obj: Any) -> None:
        k = ident(obj)
        kind = obj.kind
        if kind in ("sysctl", "nft element", "iptables rule") and k in self.objs:
            if kind == "iptables rule":  # appended once more
                self.copies[k] = self.copies.get(k, 0) + 1
            elif kind == "sysctl":
                self._store(obj)
            return
        if k in self.objs:
            raise Failed(EXISTS, f"{k} is there")
        CHECKS.get(kind, lambda f, o: None)(self, obj)
        self._store(_as_made(obj) if kind == "link" else obj)
        if kind == "netns":  # a namespace is made with its loopback, down
            lo = Link("lo", "loopback", obj.owner, obj.vm, "", obj.name, group=None, made=False)
            self._store(_like(lo, up=False))
        if kind == "link" and obj.link_kind == "veth":
            self._store(_far_end(obj))

    def _set(self, obj: Any) -> None:
        k = ident(obj)
        kind = obj.kind
        if kind == "link":
            self._set_link(obj)
        elif kind in ("sysctl", "nft table", "nft set", "nft chain", "nft element"):
            if k not in self.objs:  # a sysctl written, a table declared
                self._create(obj)
            elif kind in ("sysctl", "nft chain"):  # a chain declared: its rules replaced
                self._store(obj)
        elif kind == "iptables rule":
            if k not in self.objs:
                self._create(obj)
        elif k not in self.objs:
            raise Failed(MISSING, f"{k} is not there")
        else:
            CHECKS.get(kind, lambda f, o: None)(self, obj)
            self._store(obj)

    def _set_link(self, want: Link) -> None:
        """``link set``: what the line prints changes, the rest stays (a tap's owner, a
        veth's peer)."""
        now = self.objs.get(ident(want))
        if now is None:
            raise Failed(MISSING, f'no link "{want.name}"')
        if want.master:
            _master(self, want)
        assert isinstance(now, Link)
        new = _like(
            now,
            alias=want.alias or now.alias,
            master=want.master or now.master,
            group=want.group if want.group is not None else now.group,
            up=want.up or now.up,
            mac=(want.mac if want.link_kind in ("tun", "bridge") else None) or now.mac,
            mtu=want.mtu or now.mtu,
        )
        self.objs[ident(want)] = new
        if new.link_kind == "loopback" and new.up:  # up, it has its address
            self._store(Addr(new, "127.0.0.1/8"))
        if want.addrgen == "none":  # (its IPv6 address generation: the sysctl's value)
            path = f"net/ipv6/conf/{want.name}/addr_gen_mode"
            self._store(Sysctl(path, "1", "", now.owner, now.vm, now.ns))

    def _store(self, obj: Any) -> None:
        k = ident(obj)
        if obj.kind == "iptables rule" and obj.insert and k not in self.objs:
            self.objs = _first_in_chain(self.objs, k, obj)
            return
        self.objs[k] = obj

    # -- delete ----------------------------------------------------------------------------
    def _delete(self, obj: Any) -> None:
        k = ident(obj)
        if k not in self.objs:
            raise Failed(MISSING, f"{k} is not there")
        if self.copies.get(k):
            self.copies[k] -= 1
            return
        _in_use(self, obj)
        gone = self._doomed(k)
        for g in gone:
            self.copies.pop(g, None)
            dead = self.objs.pop(g)
            if dead.kind == "link":
                self.held.discard(dead.key)
        for k2, o in list(self.objs.items()):  # a deleted bridge's ports are let go
            master = getattr(o, "master", None) if o.kind == "link" else None
            if master and _link(o.ns, master) in gone:
                freed = copy.copy(o)
                freed.master = None  # type: ignore[attr-defined]
                self.objs[k2] = freed

    def _delete_group(self, group: Any) -> None:
        """``link del group G``: every link of the group in its namespace, each with what
        goes with it. As the kernel: group 0 is refused (EPERM); a group with no link is
        ENODEV; one holding a link that cannot be deleted (the loopback) is refused whole
        (EOPNOTSUPP)."""
        if not group.group:
            raise Failed(DENIED, "the default group is never deleted")
        members = [
            o
            for o in self.objs.values()
            if o.kind == "link" and o.ns == group.ns and o.group == group.group  # type: ignore[attr-defined]
        ]
        if not members:
            raise Failed(MISSING, f"no link in group {group.group}")
        if any(o.link_kind == "loopback" for o in members):  # type: ignore[attr-defined]
            raise Failed(OTHER, f"group {group.group} holds a loopback")
        for o in members:
            if ident(o) in self.objs:  # (a veth's far end may have gone with it)
                self._delete(o)

    def _doomed(self, first: tuple) -> set[tuple]:
        """``first`` and everything that goes with it: what lives in it, a veth's far end,
        a route whose gateway was reached through it."""
        gone = {first}
        grew = True
        while grew:
            grew = False
            for k, o in self.objs.items():
                if k not in gone and any(p in gone for p in self._home(o)):
                    gone.add(k)
                    grew = True
        return gone

    def _home(self, o: Any) -> list[tuple]:
        out = PARENTS.get(o.kind, lambda _o: [])(o)
        if o.kind == "link" and o.peer is not None:
            out = [*out, _link(*o.peer)]
        if o.kind == "route" and o.via:
            out = [*out, *self._gateway(o)]
        return out

    def _gateway(self, route: Any) -> list[tuple]:
        """The addresses whose connected network (on an up link) holds the route's gateway
        (an IPv6 one, link-local: the route's device, up)."""
        if ":" in route.via:
            link = self.objs.get(_link(route.ns, route.dev)) if route.dev else None
            return [_link(route.ns, route.dev)] if link is not None and link.up else []  # type: ignore[attr-defined]
        via = IPv4Address(route.via)
        out = []
        for k, a in self.objs.items():
            if a.kind != "addr" or a.ns != route.ns or _v6(a):
                continue
            dev = a.dev  # type: ignore[attr-defined]
            link = self.objs.get(_link(a.ns, dev))
            up = link is not None and link.up  # type: ignore[attr-defined]
            on = route.dev in (None, dev)
            if up and on and via in IPv4Interface(a.cidr).network:  # type: ignore[attr-defined]
                out.append(k)
        return out

    # -- answers a probe would get ---------------------------------------------------------
    def fib_match(self, addr: IPv4Address) -> dict | None:
        """The route that would carry ``addr``: the seeded table's, an address's local or
        connected route (its link up), most specific first."""
        found: list[tuple[IPv4Network, dict]] = []
        for dst, dev, kind, table in self.routes:
            if addr in dst:
                found.append((dst, {"type": kind, "dst": _dst(dst), "dev": dev, "table": table}))
        for a in self.objs.values():
            if a.kind != "addr" or a.ns is not None or _v6(a):
                continue
            net = IPv4Interface(a.cidr)  # type: ignore[attr-defined]
            dev = a.dev  # type: ignore[attr-defined]
            link = self.objs.get(_link(None, dev))
            if addr == net.ip:
                found.append((IPv4Network(f"{addr}/32"), _local(addr, dev)))
            elif addr in net.network and link is not None and link.up:  # type: ignore[attr-defined]
                found.append((net.network, {"dst": str(net.network), "dev": dev}))
        if not found:
            return None
        return max(found, key=lambda f: f[0].prefixlen)[1]

    def ip_json(self, argv: list[str], stdin: str | None = None) -> Result:
        """A runner answering ``ip -j -force -batch -`` as the host would: ``route get
        fibmatch``, ``route show default`` and ``link show dev``."""
        docs: list[str] = []
        err: list[str] = []
        for n, text in enumerate((stdin or "").splitlines(), 1):
            words = text.split()
            doc: object = None
            if words[:3] == ["route", "get", "fibmatch"]:
                route = self.fib_match(IPv4Address(words[3]))
                doc = [route] if route else None
            elif words[:3] == ["route", "show", "default"]:
                doc = [{"dst": "default", "dev": r[1]} for r in self.routes if r[0].prefixlen == 0]
            elif words[:3] == ["link", "show", "dev"]:
                link = self.objs.get(_link(None, words[3]))
                doc = [_shown(link)] if link is not None else None
            if doc is None:
                err.append(f"Command failed -:{n}")
            else:
                docs.append(json.dumps(doc))
        return Result(1 if err else 0, "\n".join(docs) + "\n", "\n".join(err))

    def probe(
        self,
        uplink: str | None,
        blocks: list[IPv4Network],
        is_own: Callable[[str], bool],
        links: list[str] = (),  # type: ignore[assignment]
    ) -> observe.HostView:
        """What :func:`fireroute.kernel.observe.probe` finds on this host."""
        return observe.probe(uplink, blocks, is_own, self.ip_json, links)


def _v6(addr: Any) -> bool:
    return ":" in addr.cidr


def _dst(net: IPv4Network) -> str:
    return "default" if net.prefixlen == 0 else str(net)


def _local(addr: IPv4Address, dev: str) -> dict:
    return {"type": "local", "dst": str(addr), "dev": dev, "table": "local"}


def _shown(link: Any) -> dict:
    """A link as ``ip -j -d link show`` prints it (the fields fireroute reads)."""
    kind = {"tun": "tun", "veth": "veth", "bridge": "bridge"}.get(link.link_kind)
    doc: dict = {"ifname": link.name, "flags": ["UP"] if link.up else []}
    if kind:
        doc["linkinfo"] = {"info_kind": kind}
    if link.alias:
        doc["ifalias"] = link.alias
    if link.master:
        doc["master"] = link.master
    return doc


LINK_FIELDS = (
    *("name", "link_kind", "owner", "vm", "alias", "ns", "uid", "gid", "master", "group"),
    *("up", "peer", "made", "mac", "mtu", "peer_mac"),
)


def _like(link: Link, **changed: Any) -> Link:
    """``link`` with some fields changed (a new object: the old one may be in a snapshot)."""
    return Link(**{f: changed.get(f, getattr(link, f)) for f in LINK_FIELDS})


def _as_made(link: Link) -> Link:
    """A link as its add line leaves it: down, untagged, in no bridge (a veth or a bridge
    with the MAC it was made with)."""
    mac = link.mac if link.link_kind in ("veth", "bridge") else None
    return _like(link, alias="", master=None, group=None, up=False, mtu=None, mac=mac)


def _far_end(veth: Link) -> Link:
    """A veth's other end, made with it (down, untagged, in the peer's namespace)."""
    assert veth.peer is not None
    ns, name = veth.peer
    far = _like(veth, name=name, ns=ns, peer=(veth.ns, veth.name), made=False, mac=veth.peer_mac)
    return _as_made(far)


def _first_in_chain(objs: dict, k: tuple, rule: Any) -> dict:
    """``objs`` with ``rule`` inserted before the first rule of its chain (``-I``)."""
    out: dict = {}
    chain = ("iptables rule", rule.table, rule.chain)
    for k2, o in objs.items():
        if k not in out and (o.kind, getattr(o, "table", ""), getattr(o, "chain", "")) == chain:
            out[k] = rule
        out[k2] = o
    out.setdefault(k, rule)
    return out


# -- checks beyond the parents -----------------------------------------------------------------


def _master(fake: Fake, link: Any) -> None:
    found = fake.objs.get(_link(link.ns, link.master))
    if found is None:
        raise Failed(MISSING, f'no master "{link.master}"')
    if found.link_kind != "bridge":  # type: ignore[attr-defined]
        raise Failed(OTHER, f'"{link.master}" is not a bridge')


def _check_link(fake: Fake, link: Any) -> None:
    if link.link_kind != "veth":
        return
    ns, name = link.peer
    if ns is not None and ("netns", (ns,)) not in fake.objs:
        raise Failed(MISSING, f'no namespace "{ns}"')
    if _link(ns, name) in fake.objs:
        raise Failed(EXISTS, f'a link "{name}" is there')


def _check_addr(fake: Fake, addr: Any) -> None:
    """An IPv6 address on a device with IPv6 off is refused (plan F11)."""
    off = fake.objs.get(("sysctl", (addr.ns, f"net/ipv6/conf/{addr.dev}/disable_ipv6")))
    if _v6(addr) and off is not None and off.value == "1":  # type: ignore[attr-defined]
        raise Failed(OTHER, f'IPv6 is disabled on "{addr.dev}"')


def _check_route(fake: Fake, route: Any) -> None:
    dev = fake.objs.get(_link(route.ns, route.dev)) if route.dev else None
    if dev is not None and not dev.up:  # type: ignore[attr-defined]
        raise Failed(MISSING, f'"{route.dev}" is not up')
    if route.via and not fake._gateway(route):
        raise Failed(MISSING, f"no connected network holds {route.via}")


def _check_tc(fake: Fake, tc: Any) -> None:
    if _link(tc.ns, tc.dst) not in fake.objs:
        raise Failed(MISSING, f'no link "{tc.dst}"')


def _check_rule(fake: Fake, rule: Any) -> None:
    made = ("iptables chain", (rule.table, rule.chain)) in fake.objs
    if not made and rule.chain not in BUILTIN_CHAINS.get(rule.table, ()):
        raise Failed(MISSING, f"no chain {rule.chain} in table {rule.table}")


def _in_use(fake: Fake, obj: Any) -> None:
    """A set a rule of its table refers to (``@name``), or a chain another jumps to, is busy."""
    if obj.kind not in ("nft set", "nft chain"):
        return
    rules = [
        r
        for o in fake.objs.values()
        if o.kind == "nft chain" and _table(o) == _table(obj) and o.key != obj.key
        for r in o.rules  # type: ignore[attr-defined]
    ]
    words = [w.strip('";{}') for r in rules for w in r.split()]
    if obj.kind == "nft set" and f"@{obj.name}" in words:
        raise Failed(BUSY, f"set {obj.name} is in use")
    jumps = {b for a, b in zip(words, words[1:], strict=False) if a in ("jump", "goto")}
    if obj.kind == "nft chain" and obj.name in jumps:
        raise Failed(BUSY, f"chain {obj.name} is jumped to")


CHECKS: dict[str, Callable[[Fake, Any], None]] = {
    "link": _check_link,
    "addr": _check_addr,
    "route": _check_route,
    "tc redirect": _check_tc,
    "iptables rule": _check_rule,
}
"""what making (or setting) an object needs besides its parents"""
