"""The kernel read back as the objects want/ renders (``Link``, ``Addr``, ``Sysctl``, ``Netns``,
``Route``, ``TcRedirect``, ``NftTable``, ``NftChain``, ``NftElement``, ``IptRule``): for a
healthy host, the objects of ours equal what want/ renders for the active leases, key and
attributes.

:func:`read` takes a :class:`Source` (programs through a runner, files, the namespace listing,
user and group names), so it runs from recorded outputs as well as against the kernel. What it
gives, :class:`Current`, holds the objects in read order, keyed ``(kind, key)``, and the facts
a comparison needs beside them: forwarding, every per-device sysctl value read, the namespaces
under /var/run/netns, every saved iptables rule in chain order (foreign ones and duplicates
too), the sets of our tables, every tc redirect.

What the kernel shows that want/ does not render is left out: the addresses and routes the
kernel makes itself (lo's 127.0.0.1/8, a connected route, ``proto kernel``, the link-local
``fe80::/64`` route), a per-device sysctl whose value is not the one fireroute writes
(want/tap.py ``DEVICE_SYSCTLS``; but on the tap of a VM with IPv6 its IPv6 sysctls whatever
their value), and IPv6 addresses but those of such a tap (:func:`_ipv6_taps`). A link's
MAC and MTU are read always; want/ names them only where it fixes them (:func:`as_wanted`).
"""

from __future__ import annotations

import json
import os

from fireroute import jsontext, owner
from fireroute.errors import KernelError
from fireroute.kernel import observe
from fireroute.kernel.run import Runner, read_value, run, which
from fireroute.plan.steps import in_netns
from fireroute.want.cni import HOST_VETH_SYSCTLS
from fireroute.want.iptables import IptRule
from fireroute.want.netns import Netns, Route, TcRedirect
from fireroute.want.nft import NftElement
from fireroute.want.objects import (
    FORWARD6_KEY,
    FORWARD_KEY,
    PROXY_NDP,
    Addr,
    Link,
    NeighProxy,
    Obj,
    Sysctl,
)
from fireroute.want.tables import TABLE_COMMENT, NftChain, NftSet, NftTable
from fireroute.want.tap import ADDR_GEN6, DEVICE_SYSCTLS, DISABLE6, v6_tap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from ipaddress import IPv6Network

    from fireroute.model import Vm

COUNTER = "counter packets "
FAMILIES = ("ip", "ip6", "bridge")
UNRESOLVED = ("?", "")
"""the peer of a veth whose far end is in a namespace that was not read"""


def _names(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _id(name: str, group: bool) -> int | None:
    """A tap owner's user (or group) as ``ip -d`` prints it (a name, or the number when it has
    none) -> the number."""
    if name.isdigit():
        return int(name)
    try:
        if group:
            import grp

            return grp.getgrnam(name).gr_gid
        import pwd

        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


class Source:
    """Where :func:`read` reads: ``runner`` runs a program; ``read`` gives a /proc value (None
    when unreadable); ``listdir`` a directory's names; ``alive`` says whether a path is a
    network namespace; ``has`` whether a program is installed; ``ids`` turns a tap owner's
    name into its number (``group``: a group's)."""

    __slots__ = ("runner", "read", "listdir", "alive", "has", "ids")

    def __init__(
        self,
        runner: Runner = run,
        read: Callable[[str], str | None] = read_value,
        listdir: Callable[[str], list[str]] = _names,
        alive: Callable[[str], bool] = observe.netns_alive,
        has: Callable[[str], object] = which,
        ids: Callable[[str, bool], int | None] = _id,
    ) -> None:
        self.runner = runner
        self.read = read
        self.listdir = listdir
        self.alive = alive
        self.has = has
        self.ids = ids


class Current:
    """What the kernel holds. ``objs``: (kind, key) -> object, in read order. ``forwarding``:
    the root namespace's ip_forward (``forwarding6``: its IPv6 forwarding). ``sysctls``:
    (namespace, path) -> value of every per-device sysctl read. ``namespaces``: fireroute's
    namespaces under /var/run/netns (any state file's). ``inside``: the namespaces read
    inside (clone names, CNI paths). ``sets``: (namespace, family, table) -> the names of its
    sets and maps. ``ipt``: every saved iptables rule of the nat and filter tables, in chain
    order. ``redirects``: (namespace, device) -> every device its ingress redirects to.
    ``foreign_tables``: (family, name) of the root namespace's tables that are not ours.
    ``ipt_unreadable``: the tables fireroute's iptables rules go into that iptables-nft
    cannot read (written with nft), whose rules ``ipt`` therefore lacks."""

    __slots__ = (
        "objs", "forwarding", "forwarding6", "sysctls", "namespaces", "inside", "sets", "ipt",
        "redirects", "foreign_tables", "ipt_unreadable", "_by", "_addrs",
    )  # fmt: skip

    def __init__(self) -> None:
        self.objs: dict[tuple, Obj] = {}
        self.forwarding: str | None = None
        self.forwarding6: str | None = None
        self.sysctls: dict[tuple[str | None, str], str | None] = {}
        self.namespaces: list[str] = []
        self.inside: set[str] = set()
        self.sets: dict[tuple[str | None, str, str], list[str]] = {}
        self.ipt: list[IptRule] = []
        self.redirects: dict[tuple[str | None, str], list[str]] = {}
        self.foreign_tables: list[tuple[str, str]] = []
        self.ipt_unreadable: list[str] = []
        self._by: dict[tuple[type, str | None], list[Obj]] = {}
        """the objects by (class, namespace): a view asks per namespace, per device"""
        self._addrs: dict[tuple[str | None, str], set[str]] = {}

    def add(self, obj: Obj) -> None:
        key = (obj.kind, obj.key)
        if key in self.objs:
            return
        self.objs[key] = obj
        self._by.setdefault((type(obj), obj.ns), []).append(obj)
        if isinstance(obj, Addr):
            self._addrs.setdefault((obj.ns, obj.dev), set()).add(obj.cidr)

    def get(self, kind: str, key: tuple) -> Obj | None:
        return self.objs.get((kind, key))

    def of(self, cls: type[Obj], ns: object = ...) -> Iterator:
        """The objects of one class (in namespace ``ns`` only, if given), in read order
        (namespace by namespace)."""
        if ns is not ...:
            return iter(self._by.get((cls, ns), []))  # type: ignore[arg-type]
        return (o for (c, _), objs in self._by.items() if c is cls for o in objs)

    def links(self, ns: str | None = None) -> dict[str, Link]:
        return {link.name: link for link in self.of(Link, ns)}

    def addrs(self, dev: str, ns: str | None = None) -> set[str]:
        return set(self._addrs.get((ns, dev), ()))

    def tables(self, family: str, ns: str | None = None) -> list[str]:
        return [t.name for t in self.of(NftTable, ns) if t.family == family]

    def chains(
        self, family: str, table: str, ns: str | None = None
    ) -> dict[str, tuple[str, list[str]]] | None:
        """chain -> (header, rules) of a table; None when there is no such table."""
        if self.get("nft table", (ns, family, table)) is None:
            return None
        return {
            c.name: (c.header, list(c.rules))
            for c in self.of(NftChain, ns)
            if c.family == family and c.table == table
        }

    def elements(self, family: str, table: str) -> dict[str, dict[str, str]]:
        """set -> {value: comment} of a table of the root namespace (every set, empty ones
        too)."""
        out: dict[str, dict[str, str]] = {s: {} for s in self.sets.get((None, family, table), [])}
        for e in self.of(NftElement):
            if e.family == family and e.table == table:
                out.setdefault(e.set, {})[e.value] = e.owner
        return out

    def table_is_ours(self, family: str, table: str) -> bool:
        """True if our table of the root namespace exists, False if there is none;
        ConflictError if a table of that name is someone else's."""
        if (family, table) in self.foreign_tables:
            raise observe.not_ours(table, family)
        return self.get("nft table", (None, family, table)) is not None

    def ours(self, instance: str) -> list[Obj]:
        """The objects tagged for the state file ``instance`` (not the shared ones)."""
        return [o for o in self.objs.values() if (owner.parse(o.owner) or ("",))[0] == instance]


def as_wanted(have: Obj, want: Obj) -> Obj:
    """``have`` as ``want`` compares it: a link's MAC and MTU, and a route's device, only
    where ``want`` names them (want/ fixes them only for some links and routes)."""
    if isinstance(have, Link) and isinstance(want, Link):
        return _copy(have, mac=have.mac if want.mac else None, mtu=have.mtu if want.mtu else None)
    if isinstance(have, Route) and isinstance(want, Route) and want.dev is None:
        return Route(have.dst, have.via, None, have.words, have.owner, have.vm, have.ns)
    return have


def _copy(link: Link, **kw: object) -> Link:
    out = Link.__new__(Link)
    for cls in Link.__mro__:
        for a in getattr(cls, "__slots__", ()):
            setattr(out, a, kw.get(a, getattr(link, a)))
    return out


# -- links, addresses, sysctls ---------------------------------------------------------------


def _vm_of(tag: str) -> str | None:
    """The VM (or ``bridge:<name>``) an owner tag names."""
    parsed = owner.parse(tag)
    return parsed[1] if parsed else None


def _alias_owner(alias: str) -> str:
    tag = owner.parse(alias) if alias.startswith(owner.PREFIX) else None
    return owner.tag(*tag) if tag else ""


def link_of(
    doc: dict, ns: str | None, ids: Callable[[str, bool], int | None] = _id, who: str = ""
) -> Link:
    """One ``ip -j -d addr show`` record as a Link (its peer left to :func:`_peers`)."""
    info = doc.get("linkinfo") or {}
    data = info.get("info_data") or {}
    kind = info.get("info_kind") or ("loopback" if doc.get("link_type") == "loopback" else "")
    alias = str(doc.get("ifalias", ""))
    tag = who or _alias_owner(alias)
    group = str(doc.get("group", "default"))
    user, grp_name = data.get("user"), data.get("group")
    return Link(
        str(doc["ifname"]),
        kind,
        tag,
        _vm_of(tag),
        alias,
        ns=ns,
        uid=ids(str(user), False) if user is not None else None,
        gid=ids(str(grp_name), True) if grp_name is not None else None,
        master=doc.get("master"),
        group=int(group) if group.isdigit() else None,
        up="UP" in doc.get("flags", []),
        mac=str(doc.get("address", "")).upper() or None,
        mtu=doc.get("mtu"),
    )


def _addr_docs(src: Source, ns: str | None) -> list[dict]:
    res = src.runner(in_netns(ns, ["ip", "-j", "-d", "addr", "show"]), None)
    if res.rc != 0:
        raise KernelError(f"list links{f' in {ns}' if ns else ''}", res.err)
    return [d for d in json.loads(res.out or "[]") if isinstance(d, dict) and "ifname" in d]


def _read_links(cur: Current, src: Source, ns: str | None, who: str = "") -> list[dict]:
    """Links and their addresses (lo's and IPv6 ones left out) of one namespace."""
    docs = _addr_docs(src, ns)
    for doc in docs:
        link = link_of(doc, ns, src.ids, who)
        cur.add(link)
        if link.link_kind == "loopback":
            continue  # 127.0.0.1/8 comes with lo
        for a in doc.get("addr_info", []):
            if a.get("family") == "inet":
                cur.add(Addr(link, f"{a['local']}/{a['prefixlen']}"))
            elif link.link_kind == "bridge" and f"{a['local']}/{a['prefixlen']}" == GATEWAY6:
                cur.add(Addr(link, GATEWAY6, nodad=bool(a.get("nodad"))))  # (bridge guests')
    return docs


GATEWAY6 = "fe80::1/64"
"""A bridge's one IPv6 address that may be ours: its guests' gateway (want/bridge.py)"""


def _peers(cur: Current, docs: dict[str | None, list[dict]]) -> None:
    """Each veth's far end, (namespace, name): in its own namespace by name, across by the
    pair of ifindexes each end holds of the other (a root end and one in a namespace read;
    ``UNRESOLVED`` where that does not name exactly one)."""
    root = {d.get("ifindex"): d for d in docs.get(None, [])}
    inner: dict[tuple, list[tuple[str, dict]]] = {}
    for ns, ds in docs.items():
        for d in ds:
            if ns is not None:
                inner.setdefault((d.get("ifindex"), d.get("link_index")), []).append((ns, d))
    for ns, ds in docs.items():
        for d in ds:
            link = cur.get("link", (ns, str(d["ifname"])))
            if isinstance(link, Link) and link.link_kind == "veth":
                link.peer = _far(d, ns, root, inner)


def _far(
    d: dict, ns: str | None, root: dict, inner: dict[tuple, list[tuple[str, dict]]]
) -> tuple[str | None, str]:
    if "link_netnsid" not in d and d.get("link"):
        return (ns, str(d["link"]))
    if ns is None:
        found = inner.get((d.get("link_index"), d.get("ifindex")), [])
        return (found[0][0], str(found[0][1]["ifname"])) if len(found) == 1 else UNRESOLVED
    peer = root.get(d.get("link_index"))
    mutual = peer is not None and peer.get("link_index") == d.get("ifindex")
    return (None, str(peer["ifname"])) if mutual else UNRESOLVED  # type: ignore[index]


def _device_sysctls(cur: Current, src: Source) -> None:
    """The per-device sysctls fireroute sets, of every tap and veth of the root namespace:
    each value in ``sysctls``, a Sysctl (owned as its device) where it has fireroute's value.
    ``addr_gen_mode`` is read on the NAT taps and veths' host ends of ours only (the kinds of
    device a VM with IPv6 has it on: a NAT VM's tap, a CNI attachment's host end), proxy ARP's
    on the veths of ours only (want/cni.py ``HOST_VETH_SYSCTLS``)."""
    for link in list(cur.of(Link, None)):
        if link.link_kind not in ("tun", "veth"):
            continue
        for form, ours in DEVICE_SYSCTLS.items():
            if form == ADDR_GEN6 and not _nat_tap(link):
                continue
            if form in HOST_VETH_SYSCTLS and not (link.owner and link.link_kind == "veth"):
                continue
            path = form.format(link.name)
            value = cur.sysctls[(None, path)] = src.read(f"/proc/sys/{path}")
            if value == ours:
                cur.add(Sysctl(path, value, "", link.owner, link.vm))


def _nat_tap(link: Link) -> bool:
    """A NAT tap of ours (a tap in no bridge), or a veth's host end of ours (a CNI
    attachment's may have IPv6 as a NAT tap has; a clone's is read as before: IPv6 on, not
    set up by fireroute)."""
    return bool(link.owner) and link.link_kind in ("tun", "veth") and not link.master


def _ipv6_taps(cur: Current, docs: list[dict]) -> None:
    """The IPv6 side of the NAT taps of ours that a VM with IPv6 has (docs/ipv6-plan.md 1.3;
    want/tap.py ``v6_tap``: IPv6 on, and ``addr_gen_mode`` 1 or its gateway ``fe80::1/64``
    there). Of such a tap, ``disable_ipv6`` 0 and ``addr_gen_mode`` whatever its value are
    Sysctls, and every IPv6 address an Addr (``fe80::1/64`` is wanted; another, a link-local
    address the kernel made before ``addr_gen_mode`` was written, is not). A tap with IPv6
    off has no IPv6 address; one with IPv6 on that is not set up so (a tap of a VM without
    IPv6, its ``disable_ipv6`` changed behind fireroute's back) is read as before: its
    ``disable_ipv6`` is no object."""
    for doc in docs:
        link = cur.get("link", (None, str(doc["ifname"])))
        if not isinstance(link, Link) or not _nat_tap(link):
            continue
        disable, mode = DISABLE6.format(link.name), ADDR_GEN6.format(link.name)
        value = cur.sysctls.get((None, mode))
        inet6 = [a for a in doc.get("addr_info", []) if a.get("family") == "inet6"]
        cidrs = [f"{a['local']}/{a['prefixlen']}" for a in inet6]
        nodad = [c for a, c in zip(inet6, cidrs, strict=True) if a.get("nodad")]
        if not v6_tap(cur.sysctls.get((None, disable)), value, nodad):
            continue
        cur.add(Sysctl(disable, "0", "", link.owner, link.vm))
        if value is not None:
            cur.add(Sysctl(mode, value, "", link.owner, link.vm))
        for a, cidr in zip(inet6, cidrs, strict=True):
            cur.add(Addr(link, cidr, nodad=bool(a.get("nodad"))))


def _routes(cur: Current, src: Source, ns: str | None, who: str = "", six: bool = False) -> None:
    """The routes of the main table (not those the kernel adds for an address), owned as
    their device (or the namespace). ``six``: the IPv6 ones (``ip -6``; the default route
    is ``::/0``, a host route ``/128``; the link-local prefix ``fe80::/64`` is the kernel's)."""
    argv = ["ip", *(["-6"] if six else []), "-j", "route", "show"]
    res = src.runner(in_netns(ns, argv), None)
    if res.rc != 0:
        return
    devs = cur.links(ns)
    for r in json.loads(res.out or "[]"):
        if not isinstance(r, dict) or r.get("protocol") == "kernel" or "dst" not in r:
            continue
        dst = _dst(str(r["dst"]), six)
        if dst.startswith("fe80::"):
            continue
        dev = r.get("dev")
        tag = who or (devs[dev].owner if dev in devs else "")
        vm = _vm_of(tag)
        cur.add(Route(dst, r.get("gateway"), dev, "", tag, vm, ns))


def _bridge_routes(cur: Current, vms: list[Vm], instance: str, pools6: list[IPv6Network]) -> None:
    """An IPv6 route onto a bridge of ours is a bridge guest's /64 (want/bridge.py route6):
    the VM's whose lease it is, else, a block of one of this state file's pools
    (``pools6``), an orphan of this state file (its guest forgotten), not the bridge's (which
    would keep it while the bridge stays). A block of no pool of ours is another state
    file's guest's on a bridge they share: nobody's here."""
    blocks = {str(v.net6): v for v in vms if v.mode == "bridge" and v.net6 is not None}
    for r in list(cur.of(Route, None)):
        tag = owner.parse(r.owner)
        if tag is None or not tag[1].startswith(owner.BRIDGE) or ":" not in r.dst:
            continue
        vm = blocks.get(r.dst)
        if vm is not None:
            r.vm, r.owner = vm.name, vm.tag
        elif instance and _in_pools(r.dst, pools6):
            r.vm = f"route {r.dst}"
            r.owner = owner.tag(instance, r.vm)
        else:
            r.vm, r.owner = None, ""


def _in_pools(block: str, pools: list[IPv6Network]) -> bool:
    from ipaddress import IPv6Network

    try:
        net = IPv6Network(block)
    except ValueError:
        return False
    return any(net.subnet_of(p) for p in pools)


def pools6_of(vms: Iterable[Vm], own: str | None) -> list[IPv6Network]:
    """A state file's IPv6 pools: its own (``own``, as recorded) and those its VMs were
    given (``--pool6``)."""
    from ipaddress import IPv6Network

    pools = {v.options.pool6 for v in vms if v.options.pool6 is not None}
    return sorted(pools | ({IPv6Network(own)} if own else set()))


def _proxies(cur: Current, src: Source, vms: list[Vm]) -> None:
    """Proxy NDP (docs/ipv6.md): the neighbour proxy entries of the root namespace whose
    address is a NAT guest's of ``vms`` (owned as that VM), or, on the uplink of a VM of a
    pool given with ``--pool6``, a guest's address (``::2`` of a block) of such a pool that is
    no lease's: an orphan of this state file, ``proxy ADDR`` (the kernel keeps no tag: an
    entry is ours by its address; one outside our pools is not read). And each uplink's
    ``proxy_ndp`` where a ``--proxy-ndp`` VM wants it (a Sysctl, owned as the first such VM,
    when 1). Read only when some VM of ``vms`` has a global pool given with ``--pool6``."""
    nat6 = [v for v in vms if v.mode == "nat" and v.guest6 is not None]
    pools = _pools6(nat6)
    if not pools:
        return  # (no VM of a given global pool: nothing read, as before proxy NDP)
    guests = {str(v.guest6.ip): v for v in nat6}  # type: ignore[union-attr]
    uplinks, instance = {v.uplink for v in nat6}, owner.parse(nat6[0].tag)
    res = src.runner(["ip", "-6", "-j", "neigh", "show", "proxy"], None)
    for n in json.loads(res.out or "[]") if res.rc == 0 else []:
        dst, dev = (str(n.get("dst")), n.get("dev")) if isinstance(n, dict) else ("", None)
        vm = guests.get(dst)
        if vm is not None and dev:
            cur.add(NeighProxy(str(dev), dst, vm.tag, vm.name))
        elif dev in uplinks and instance is not None and _guest_of(dst, pools):
            name = f"proxy {dst}"
            cur.add(NeighProxy(str(dev), dst, owner.tag(instance[0], name), name))
    for vm in guests.values():
        path = PROXY_NDP.format(vm.uplink)
        if not vm.options.proxy_ndp or (None, path) in cur.sysctls:
            continue
        value = cur.sysctls[(None, path)] = src.read(f"/proc/sys/{path}")
        if value == "1":
            cur.add(Sysctl(path, value, "", vm.tag, vm.name))


def _pools6(vms: list[Vm]) -> dict[IPv6Network, set[int]]:
    """The global pools given with ``--pool6`` of ``vms`` (NAT VMs with IPv6), each with the
    block sizes (``--prefix6``) its VMs use (a unique local pool is masqueraded: never
    proxied)."""
    from fireroute.addressing import unique_local6

    pools: dict[IPv6Network, set[int]] = {}
    for v in vms:
        if v.options.pool6 is not None and not unique_local6(v.options.pool6):
            pools.setdefault(v.options.pool6, set()).add(v.options.prefix6)
    return pools


def _guest_of(addr: str, pools: dict[IPv6Network, set[int]]) -> bool:
    """Is ``addr`` the guest's address (``::2``) of some block of one of ``pools``?"""
    from ipaddress import IPv6Address

    try:
        ip = IPv6Address(addr)
    except ValueError:
        return False
    return any(
        ip in pool and (int(ip) - int(pool.network_address)) % (1 << (128 - n)) == 2
        for pool, sizes in pools.items()
        for n in sizes
    )


def _dst(dst: str, six: bool) -> str:
    """A route's destination as want/ keys it: a prefix, ``default`` (IPv6's ``::/0``)."""
    if dst == "default":
        return "::/0" if six else dst
    return dst if "/" in dst else f"{dst}/{128 if six else 32}"


# -- namespaces, tc ----------------------------------------------------------------------------


def _netns_owner(name: str) -> str:
    """``fireroute-<instance>-<vm>`` -> ``<instance>:<vm>`` ("" for another name)."""
    rest = name.removeprefix(observe.NETNS_PREFIX)
    instance, sep, vm = rest.partition("-")
    ok = rest != name and sep and vm and instance and set(instance) <= owner.HEX
    return owner.tag(instance, vm) if ok else ""


def _clone_ns(cur: Current, src: Source, name: str) -> list[dict]:
    """What a clone's namespace holds: its links, routes, forwarding, NAT table."""
    who = _netns_owner(name)
    docs = _read_links(cur, src, name, who)
    _routes(cur, src, name, who)
    res = src.runner(in_netns(name, ["sysctl", "-n", FORWARD_KEY]), None)
    value = res.out.strip() if res.rc == 0 else None
    cur.sysctls[(name, FORWARD_KEY)] = value
    vm = _vm_of(who)
    if value == "1":
        cur.add(Sysctl(FORWARD_KEY, value, "", who, vm, name))
    from fireroute.want.clone import NS_TABLE

    _chains(cur, src, "ip", NS_TABLE, name, who)
    return docs


def _clone_ns6(cur: Current, src: Source, vm: Vm, docs: list[dict]) -> None:
    """What a clone with IPv6 holds in its namespace besides (want/clone.py ``inside6``): every
    IPv6 address of its tap and veth end (both brought up without address generation: a
    link-local address of the kernel's there is not wanted), its IPv6 routes, IPv6 forwarding
    and both links' ``addr_gen_mode`` (one ``sysctl``), the NAT66 table."""
    from fireroute.want.clone import NS_TABLE, NS_VETH

    ns, who = str(vm.netns), _netns_owner(str(vm.netns))
    links = cur.links(ns)
    devs = [d for d in (vm.vm_tap, NS_VETH) if d in links]
    for doc in docs:
        if doc["ifname"] in devs:
            for a in doc.get("addr_info", []):
                if a.get("family") == "inet6":
                    cidr = f"{a['local']}/{a['prefixlen']}"
                    cur.add(Addr(links[doc["ifname"]], cidr, nodad=bool(a.get("nodad"))))
    _routes(cur, src, ns, who, six=True)
    keys = [FORWARD6_KEY, *(ADDR_GEN6.format(d) for d in devs)]
    values = src.runner(in_netns(ns, ["sysctl", "-n", *keys]), None).out.split()
    if len(values) == len(keys):  # (a link gone since it was listed: read as not set)
        for key, value in zip(keys, values, strict=True):
            cur.sysctls[(ns, key)] = value
            if key != FORWARD6_KEY or value == "1":
                cur.add(Sysctl(key, value, "", who, _vm_of(who), ns))
    _chains(cur, src, "ip6", NS_TABLE, ns, who)


def _tc(cur: Current, src: Source, ns: str, devs: list[str]) -> None:
    """The redirects on the ingress of ``devs`` in a CNI namespace (one ``tc -batch``: a JSON
    list per device, in order; a device that vanished prints none)."""
    if not devs:
        return
    lines = "".join(f"filter show dev {d} ingress\n" for d in devs)
    res = src.runner(in_netns(ns, ["tc", "-j", "-force", "-batch", "-"]), lines)
    try:
        docs = jsontext.loads_all(res.out)
    except ValueError:
        docs = []
    links = cur.links(ns)
    for dev, doc in zip(devs, docs, strict=False):
        filters = [f for f in doc if isinstance(f, dict)] if isinstance(doc, list) else []
        to = [
            str(a.get("to_dev"))
            for f in filters
            for a in (f.get("options", {}) or {}).get("actions", []) or []
            if a.get("kind") == "mirred" and a.get("mirred_action") == "redirect"
        ]
        cur.redirects[(ns, dev)] = to
        if to:
            cur.add(TcRedirect(dev, to[0], links[dev].owner, links[dev].vm, ns))


# -- nftables ----------------------------------------------------------------------------------


def parse_chains(listing: str) -> dict[str, tuple[str, list[str]]]:
    """``nft list table`` text -> {chain: (header, rules)}, counters' values left out."""
    out: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    header = ""
    rules: list[str] = []
    for raw in listing.splitlines():
        line = raw.strip()
        if current is None:
            if line.startswith("chain ") and line.endswith("{"):
                current, header, rules = line.split()[1], "", []
            continue
        if line == "}":
            out[current] = (header, rules)
            current = None
        elif line.startswith("type ") and not rules and not header:
            header = line
        elif line:
            rules.append(_uncounted(line))
    return out


def parse_sets(listing: str) -> dict[str, tuple[str, bool]]:
    """``nft list table`` text -> {set or map: (its type as want/ declares it, is a map)}: the
    ``type`` line, then ``; flags …`` and ``; counter`` as listed before its elements."""
    out: dict[str, tuple[str, bool]] = {}
    name: str | None = None
    is_map, listed = False, False
    parts: list[str] = []
    for raw in listing.splitlines():
        line = raw.strip()
        head = line.split(" ")
        if name is None:
            if len(head) == 3 and head[0] in ("set", "map") and head[2] == "{":
                name, is_map, listed, parts = head[1], head[0] == "map", False, []
        elif line == "}":
            out[name], name = ("; ".join(parts), is_map), None
        elif line.startswith("elements ="):
            listed = True
        elif not listed and line.startswith("type "):
            parts.insert(0, line[len("type ") :])
        elif not listed and line.startswith("typeof "):  # (as want/ declares it: whole)
            parts.insert(0, line)
        elif not listed and (line.startswith("flags ") or line == "counter"):
            parts.append(line)
    return out


def _uncounted(rule: str) -> str:
    while COUNTER in rule:  # "counter packets 3 bytes 180" -> "counter"
        at = rule.index(COUNTER)
        rest = rule[at + len(COUNTER) :].split(" ", 3)  # N bytes M rest
        rule = rule[:at] + "counter" + (" " + rest[3] if len(rest) > 3 else "")
    return rule


def _chains(
    cur: Current, src: Source, family: str, table: str, ns: str | None, who: str = ""
) -> NftTable | None:
    """A table (when it exists) and its chains, as ``nft list table`` prints them."""
    res = src.runner(in_netns(ns, ["nft", "list", "table", family, table]), None)
    if res.rc != 0:
        if "No such file or directory" in res.err:
            return None
        raise KernelError(f'read nftables table "{table}"', res.err)
    vm = _vm_of(who)
    t = NftTable(family, table, "", who or (TABLE_COMMENT if ns is None else ""), vm, ns)
    cur.add(t)
    for name, (header, rules) in parse_chains(res.out).items():
        cur.add(NftChain(t, name, header, tuple(rules)))
    for name, (kind, is_map) in parse_sets(res.out).items():
        cur.add(NftSet(t, name, kind, is_map))
    return t


def _nft(cur: Current, src: Source) -> None:
    """Our tables of both families in the root namespace (ours by their comment): chains,
    sets, and elements (owned by their comment)."""
    for family in FAMILIES:
        ours, every = observe.nft_tables(src.runner, family)
        cur.foreign_tables += [(family, t) for t in every if t not in ours]
        for table in ours:
            if _chains(cur, src, family, table, None) is None:
                continue
            sets = observe.nft_elements(table, src.runner, family) or {}
            cur.sets[(None, family, table)] = list(sets)
            for set_name, elems in sets.items():
                for value, comment in elems.items():
                    vm = _vm_of(comment)
                    cur.add(NftElement(family, table, set_name, value, comment, vm))


# -- iptables ----------------------------------------------------------------------------------


def _unquoted(spec: str) -> str:
    """A saved rule's spec with its comment unquoted (``--comment "fireroute:…"``, as
    iptables-nft-save may print it): fireroute's comments hold no space."""
    marker = '--comment "'
    at = spec.find(marker)
    if at < 0:
        return spec
    end = spec.find('"', at + len(marker))
    value = spec[at + len(marker) : end]
    if end < 0 or " " in value:
        return spec
    return spec[: at + len(marker) - 1] + value + spec[end + 1 :]


def rule_of(table: str, line: str) -> IptRule:
    """A saved ``-A CHAIN spec`` line as an IptRule, owned as its comment says (``<id>:<vm>``,
    ``fireroute:shared`` for the shared rule, "" for a rule that is not fireroute's)."""
    _, chain, spec = line.split(" ", 2)
    spec = _unquoted(spec)
    marker = f"--comment {owner.PREFIX}"
    at = spec.find(marker)
    tag = spec[at + len("--comment ") :].split(" ", 1)[0] if at >= 0 else ""
    who = tag if tag == owner.SHARED else tag.removeprefix(owner.PREFIX)
    vm = _vm_of(who)
    return IptRule(table, chain, spec, who, vm)


def _iptables(cur: Current, src: Source) -> None:
    saved, _, cur.ipt_unreadable, _ = observe.iptables_save(src.runner)
    for table, line in saved:
        rule = rule_of(table, line)
        cur.ipt.append(rule)
        if rule.owner:
            cur.add(rule)


# -- the whole read ----------------------------------------------------------------------------


def read(
    src: Source, vms: Iterable[Vm] = (), instance: str = "", own6: str | None = None
) -> Current:
    """Everything: the root namespace's links, addresses (IPv6 ones of the taps of VMs with
    IPv6), per-device sysctls, routes (IPv4 and IPv6), forwarding (both); our nft tables (of
    the ip, ip6 and bridge families); the tagged iptables rules; fireroute's namespaces; and inside
    the namespaces of ``vms`` that exist (a clone's, a CNI attachment's) what they hold.
    ``instance``, ``own6``: the state file's id and own IPv6 pool, as recorded (a bridge
    guest's route no lease has is ours by its block: :func:`_bridge_routes`)."""
    cur, vms = Current(), list(vms)
    docs: dict[str | None, list[dict]] = {None: _read_links(cur, src, None)}
    cur.forwarding = src.read("/proc/sys/net/ipv4/ip_forward")
    cur.forwarding6 = src.read(f"/proc/sys/{FORWARD6_KEY.replace('.', '/')}")
    cur.namespaces = [
        n for n in src.listdir(observe.NETNS_DIR) if n.startswith(observe.NETNS_PREFIX)
    ]
    for name in cur.namespaces:
        who = _netns_owner(name)
        cur.add(Netns(name, who, _vm_of(who)))
    _inside(cur, src, vms, docs)
    _peers(cur, docs)
    _device_sysctls(cur, src)
    _ipv6_taps(cur, docs[None])
    _routes(cur, src, None)
    _routes(cur, src, None, six=True)
    _bridge_routes(cur, vms, instance, pools6_of(vms, own6))
    _proxies(cur, src, vms)
    if src.has("nft"):
        _nft(cur, src)
    if src.has("iptables-nft-save"):
        _iptables(cur, src)
    return cur


def _inside(cur: Current, src: Source, vms: Iterable[Vm], docs: dict) -> None:
    """What the namespaces of ``vms`` hold (those that exist): a clone's everything, a CNI
    attachment's links and redirects; ``docs`` gets each one's link records."""
    made = set(cur.namespaces)
    devs: dict[str, list[str]] = {}
    for vm in vms:
        if vm.mode == "clone" and vm.netns in made and vm.netns not in docs:
            docs[vm.netns] = _clone_ns(cur, src, vm.netns)
            if vm.net6 is not None:
                _clone_ns6(cur, src, vm, docs[vm.netns])
        elif vm.mode == "cni" and vm.netns and src.alive(vm.netns):
            from fireroute.want.cni import redirects

            if vm.netns not in docs:
                docs[vm.netns] = _read_links(cur, src, vm.netns)
            devs.setdefault(vm.netns, []).extend(r.src for r in redirects(vm))
    for ns, names in devs.items():
        there = cur.links(ns)
        _tc(cur, src, ns, [d for d in dict.fromkeys(names) if d in there])
        _ipv6_off(cur, src, ns, [d for d in dict.fromkeys(names) if d in there])
    cur.inside = {ns for ns in docs if ns}


def _ipv6_off(cur: Current, src: Source, ns: str, devs: list[str]) -> None:
    """``disable_ipv6`` of the links of CNI attachments in a namespace (one ``sysctl``): a
    Sysctl (owned as its link) where it is 1, as want/cni.py wants it."""
    if not devs:
        return
    res = src.runner(in_netns(ns, ["sysctl", "-n", *(DISABLE6.format(d) for d in devs)]), None)
    values = res.out.split() if res.rc == 0 else []
    if len(values) != len(devs):  # (a link gone since it was listed: read as not set)
        return
    links = cur.links(ns)
    for dev, value in zip(devs, values, strict=True):
        path = DISABLE6.format(dev)
        cur.sysctls[(ns, path)] = value
        if value == "1":
            cur.add(Sysctl(path, value, "", links[dev].owner, links[dev].vm, ns))
