"""The desired state as one value: every object one VM needs (:func:`vm`), and with the objects
its state file's VMs share (want/shared.py) everything fireroute wants on the host
(:func:`desired`), keyed as the reader keys what it finds (:func:`index`), so that one diff
(plan/diff.py) compares the two.

Pure: the kinds are assembled from want/tap.py, bridge.py, clone.py, cni.py, nft.py and
iptables.py, decided as the plans decide them today.
"""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.want import bridge, iptables, nft, tap
from fireroute.want.objects import FORWARD6_KEY, Forwarding, Link, Obj
from fireroute.want.shared import (
    BRIDGE,
    NAT,
    NAT6,
    Population,
    Shared,
    masquerading_bridge,
    nat_member,
    shared,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    Index = dict[tuple, Obj]
    Held = Mapping[Any, Iterable[str]]  # (a table's name; an ip6 table's: (NAT6, name))

WANTED = "1"
"""IPv4 forwarding while any VM is up"""


def index(objs: Iterable[Obj]) -> Index:
    """Objects by (kind, key), in the order given (a later equal key wins)."""
    return {(o.kind, o.key): o for o in objs}


def links(lease: Vm) -> list[Obj]:
    """The VM's devices, addresses, routes, namespace and per-device sysctls, by mode."""
    if lease.mode == "clone":
        from fireroute.want.clone import clone

        objs = clone(lease)
    elif lease.mode == "cni":
        from fireroute.want.cni import cni

        objs = cni(lease)
    else:
        objs = tap.tap(lease)  # (a NAT tap's route_localnet among them)
        if lease.mode == "bridge":
            objs += bridge.route6(lease)
    if lease.mode != "nat" and tap.localnet(lease):  # every mode's host device, as up does
        objs.append(tap.route_localnet(lease))
    return objs


def vm(lease: Vm, rules: bool = True) -> list[Obj]:
    """Everything one VM needs, in creation order: its links (and what goes with them), then
    its own elements of the NAT table (nft backend) or its iptables block, its FORWARD-policy
    fix, then a bridge guest's anti-spoofing elements. The shared objects (tables, a bridge,
    a masquerading bridge's egress element) are :func:`shared_objects`'. ``rules`` False:
    without the iptables rules (down takes them as ``iptables-nft-save`` prints them)."""
    objs = links(lease)
    if nat_member(lease):
        if lease.backend == "nft":
            objs += nft.elements(lease)
            objs += nft.elements6(lease)
        if rules:
            objs += iptables.rules(lease)
    if lease.mode == "bridge":
        objs += nft.filter_elements(lease)
    if lease.options.proxy_ndp and lease.guest6 is not None:  # (docs/ipv6.md, proxy NDP)
        objs += neigh_proxy(lease)
    return objs


def neigh_proxy(lease: Vm) -> list[Obj]:
    """A ``--proxy-ndp`` VM's: the uplink's proxy_ndp on, and its guest's address proxied."""
    from fireroute.want.objects import NeighProxy, proxy_ndp

    guest = str(lease.guest6.ip)  # type: ignore[union-attr]
    return [
        proxy_ndp(lease.uplink, lease.tag, lease.name),
        NeighProxy(lease.uplink, guest, lease.tag, lease.name),
    ]


def bridge_objects(name: str, leases: Iterable[Vm], instance: str, v6: bool = False) -> list[Obj]:
    """A bridge in use: as the first of ``leases`` on it would make it (with its
    ``--bridge-address``), else the link alone (no lease at hand says its address); ``v6``
    (a guest with IPv6 on it): with the guests' IPv6 gateway."""
    on = next((v for v in leases if v.mode == "bridge" and str(v.options.bridge) == name), None)
    objs: list[Obj]
    if on is not None:
        br, objs = bridge.link(on), bridge.bridge(on)
    else:
        tag = owner.tag(instance, owner.bridge_name(name))
        mac = bridge.mac(instance, name)
        br = Link(name, "bridge", tag, None, bridge.alias(instance, name), mac=mac)
        objs = [br]
    return objs + ([bridge.gateway6(br)] if v6 else [])


def needed_sets(leases: Iterable[Vm], own: Iterable[list[Obj]]) -> dict[str, set[str]]:
    """NAT table -> the sets the nft ``leases`` have elements in (:func:`nft.nat_elements`'),
    read off their objects as :func:`vm` rendered them (``own``, one list a lease): each
    VM's elements are made once."""
    out: dict[str, set[str]] = {}
    for lease, objs in zip(leases, own, strict=True):
        if lease.backend != "nft":
            continue
        sets = out.setdefault(lease.table, set())
        if not nat_member(lease):
            continue
        sets.update(o.set for o in objs if o.kind == "nft element" and o.family == NAT)  # type: ignore[attr-defined]
        if masquerading_bridge(lease):
            sets.add("egress")
    return out


def shared_objects(
    want: Shared,
    leases: Iterable[Vm],
    instance: str,
    held: Held | None = None,
    needed: Mapping[str, Iterable[str]] | None = None,
    needed6: Mapping[str, Iterable[str]] | None = None,
) -> list[Obj]:
    """The objects of ``want``: each bridge in use, forwarding, each table with its layout
    (sets, maps, chains: the parts its leases need, and those ``held`` says it holds), the
    masquerading bridges' egress elements, the conntrack rule. ``needed``: the sets the
    leases have elements in, by table (:func:`needed_sets`), when already known (``needed6``:
    in the ip6 tables)."""
    from fireroute.want.tables import filter_layout, nat_layout, parts_of

    leases = list(leases)
    objs: list[Obj] = []
    for br in sorted(want.bridges):
        objs += bridge_objects(br, leases, instance, br in want.bridges6)
    if want.forwarding:
        objs.append(Forwarding(WANTED))
    if want.forwarding6:
        objs.append(Forwarding(WANTED, path=FORWARD6_KEY))
    for table in want.tables_of(NAT):
        if needed is None:
            users = [v for v in leases if v.table == table and v.backend == "nft"]
            sets: Iterable[str] = (e.set for v in users for e in nft.nat_elements(v))
        else:
            sets = needed.get(table, ())
        parts = parts_of(sets) | parts_of((held or {}).get(table, ()))
        objs += nat_layout(table, parts)
        objs += [nft.egress_element(table, *e) for e in sorted(want.egress_of(table))]
    for table in want.tables_of(NAT6):
        sets6 = None if needed6 is None else needed6.get(table, ())
        objs += _nat6_table(table, leases, (held or {}).get((NAT6, table), ()), sets6)
    for table in want.tables_of(BRIDGE):
        objs += filter_layout(table)
    if want.conntrack:
        objs.append(iptables.conntrack())
    return objs


def _nat6_table(
    table: str, leases: list[Vm], held: Iterable[str], sets: Iterable[str] | None = None
) -> list[Obj]:
    """The ip6 table ``table`` with the parts its leases' IPv6 elements need (a lease at hand:
    else the lean layout; ``sets``: the sets they are in, when known) and those it ``held``
    (names of its sets and chains, as read)."""
    from fireroute.want.tables6 import nat6_layout, parts6_of

    if sets is None:
        sets = (e.set for v in leases if v.table == table for e in nft.elements6(v))
    return nat6_layout(table, parts6_of(sets) | parts6_of(held))


def desired(
    leases: Iterable[Vm], shape: Population | None, instance: str, held: Held | None = None
) -> Index:
    """Everything the host should have for ``leases`` and a state file of ``shape`` (the
    leases' own when None): the shared objects, then each VM's. A NAT table holds the parts
    (want/tables.py PARTS) its leases need and, once made, those ``held`` (table -> the names
    of the sets, maps and chains it has) says it has: a part stays until the table goes."""
    leases = list(leases)
    own = [vm(lease) for lease in leases]
    want = shared(Population.of(leases) if shape is None else shape, instance)
    needed6: dict[str, set[str]] = {}  # (each VM's ip6 elements rendered once, as the ip ones)
    for objs in own:
        for o in objs:
            if o.kind == "nft element" and o.family == NAT6:  # type: ignore[attr-defined]
                needed6.setdefault(o.table, set()).add(o.set)  # type: ignore[attr-defined]
    objs = shared_objects(want, leases, instance, held, needed_sets(leases, own), needed6)
    for each in own:
        objs += each
    return index(objs)


def held(current: Mapping[tuple, Obj]) -> dict[str | tuple[str, str], set[str]]:
    """NAT table (an ip6 one: ``(NAT6, table)``) -> the names of the sets, maps and chains
    ``current`` (a host read, or what a plan made) has in it: the ``held`` of
    :func:`desired`. (An ip6 table declared whole, by an up that found a table there, holds
    every part: check once called those not fireroute's.)"""
    out: dict[str | tuple[str, str], set[str]] = {}
    for kind, key in current:
        if kind in ("nft set", "nft chain") and key[0] is None and key[1] in (NAT, NAT6):
            at = key[2] if key[1] == NAT else (NAT6, key[2])
            out.setdefault(at, set()).add(key[3])
    return out
