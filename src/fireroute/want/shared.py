"""What the VMs of one state file share on the host, decided from the shape of their leases.

The shape (:class:`Population`) counts the VMs per (mode, backend, table, bridge, NAT member,
masquerading bridge, uplink, IPv6): enough to decide "first VM of a table", "last on a bridge" or
"last VM at all" in O(shapes), so the per-VM cost stays flat however many VMs are up.
:func:`shared` turns a shape into the shared objects the host should have for it: each nft
table with a VM in it, each bridge a VM is on, each masquerading bridge's egress element, the
shared iptables conntrack rule, forwarding; with IPv6 VMs, each ip6 NAT table and IPv6
forwarding. A shared object is wanted exactly while some VM
needs it, so a verb reads "first" as "not wanted by the others" and "last" as "not wanted by
those that stay"; whether another state file still uses it is a kernel read, not decided here.

Pure: no kernel, no state file (the store's rows are passed in).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from fireroute.model import Vm

    Key = tuple[str, str, str, str | None, bool, bool, str, bool]

NAT = "ip"
"""the nft family of the NAT table (the ``--table``)"""
BRIDGE = "bridge"
"""the nft family of the bridge guests' filter table (of the same name)"""
NAT6 = "ip6"
"""the nft family of the IPv6 VMs' NAT table (of the same name)"""


def _member(mode: str, addressed: bool) -> bool:
    return mode != "bridge" or addressed


def _masquerading(mode: str, masquerade: object, addressed: bool) -> bool:
    return mode == "bridge" and bool(masquerade) and addressed


def nat_member(vm: Vm) -> bool:
    """Has the VM entries in the shared NAT table or rules? A bridge guest has when its
    address is known (not DHCP): host protection and masquerade are keyed by it."""
    return _member(vm.mode, vm.guest_ip is not None)


def masquerading_bridge(vm: Vm) -> bool:
    """Is the VM a bridge guest routed out of the uplink with masquerade (the shared egress
    element of its bridge)?"""
    return _masquerading(vm.mode, vm.options.masquerade, vm.guest_ip is not None)


def uses_uplink(vm: Vm) -> bool:
    """Does the VM's traffic leave through the uplink by fireroute's rules?"""
    return vm.mode != "bridge" or masquerading_bridge(vm)


def shape_of(vm: Vm) -> Key:
    """A VM's shape: what the shared objects depend on."""
    return (
        vm.mode,
        vm.backend,
        vm.table,
        vm.options.bridge if vm.mode == "bridge" else None,
        nat_member(vm),
        masquerading_bridge(vm),
        vm.uplink,
        vm.net6 is not None,
    )


class Population:
    """VMs counted per shape. ``rows`` are the state file's (mode, backend, table, bridge,
    masquerade, dhcp, uplink, ipv6, count) (``Store.shapes``; a row without ``ipv6``: a
    v4-only shape); ``minus`` are VMs among them taken away (those going down)."""

    __slots__ = ("counts",)

    def __init__(self, rows: Iterable[tuple[object, ...]] = (), minus: Iterable[Vm] = ()) -> None:
        counts: dict[Key, int] = {}
        for mode, backend, table, br, masq, dhcp, uplink, *v6, n in rows:
            m, addressed = str(mode), not dhcp
            key = (
                m,
                str(backend),
                str(table),
                None if br is None else str(br),
                _member(m, addressed),
                _masquerading(m, masq, addressed),
                str(uplink),
                bool(v6 and v6[0]),
            )
            counts[key] = counts.get(key, 0) + int(n)  # type: ignore[call-overload]
        for vm in minus:
            key = shape_of(vm)
            counts[key] = counts.get(key, 0) - 1
        self.counts = {k: n for k, n in counts.items() if n > 0}

    @classmethod
    def of(cls, vms: Iterable[Vm]) -> Population:
        """The shape of these VMs (when they, not a state file's rows, are the population)."""
        shape = cls()
        for vm in vms:
            key = shape_of(vm)
            shape.counts[key] = shape.counts.get(key, 0) + 1
        return shape

    def less(self, other: Population) -> Population:
        """This population without ``other``'s VMs (those going down, counted once)."""
        counts = dict(self.counts)
        for key, n in other.counts.items():
            counts[key] = counts.get(key, 0) - n
        out = Population()
        out.counts = {k: n for k, n in counts.items() if n > 0}
        return out

    def empty(self) -> bool:
        return not self.counts


class Shared:
    """The shared objects a shape wants.

    ``tables``: (family, table) of each nft table with a VM in it: the NAT table (``NAT``)
    of NAT members on the nft backend, the filter table (``BRIDGE``) of bridge guests.
    ``bridges``: the bridges VMs are on. ``egress``: (table, bridge, uplink, owner) of each
    masquerading bridge's egress element in an nft NAT table. ``conntrack``: the shared
    iptables rule (some NAT member on the iptables backend). ``forwarding``: IPv4 forwarding
    on (some VM at all); ``forwarding6``: IPv6 forwarding on (some VM with IPv6). An IPv6
    NAT member on nft has the ip6 table (``NAT6``) of its table's name too. ``bridges6``:
    the bridges with a guest with IPv6 (the guests' gateway ``fe80::1`` on them)."""

    __slots__ = (
        *("tables", "bridges", "egress", "conntrack", "forwarding", "forwarding6"),
        "bridges6",
    )

    def __init__(
        self,
        tables: frozenset[tuple[str, str]],
        bridges: frozenset[str],
        egress: frozenset[tuple[str, str, str, str]],
        conntrack: bool,
        forwarding: bool,
        forwarding6: bool = False,
        bridges6: frozenset[str] = frozenset(),
    ) -> None:
        self.tables = tables
        self.bridges = bridges
        self.egress = egress
        self.conntrack = conntrack
        self.forwarding = forwarding
        self.forwarding6 = forwarding6
        self.bridges6 = bridges6

    def tables_of(self, family: str) -> list[str]:
        """The tables of one family, sorted (the order verbs change them in)."""
        return sorted(t for f, t in self.tables if f == family)

    def egress_of(self, table: str) -> set[tuple[str, str, str]]:
        """(bridge, uplink, owner) of the egress elements in one NAT table."""
        return {(b, u, o) for t, b, u, o in self.egress if t == table}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shared) and all(
            getattr(self, a) == getattr(other, a) for a in self.__slots__
        )

    def __repr__(self) -> str:
        return "Shared(" + ", ".join(f"{a}={getattr(self, a)!r}" for a in self.__slots__) + ")"


def shared(shape: Population, instance: str) -> Shared:
    """The shared objects the VMs of ``shape`` (of the state file ``instance``) want."""
    tables, bridges, egress, bridges6 = set(), set(), set(), set()
    conntrack = forwarding6 = False
    for mode, backend, table, br, member, masq, uplink, v6 in shape.counts:
        forwarding6 = forwarding6 or v6
        if member and backend == "nft":
            tables.add((NAT, table))
            if v6:
                tables.add((NAT6, table))
            if masq:
                egress.add((table, str(br), uplink, instance))
        conntrack = conntrack or (member and backend == "iptables")
        if mode == "bridge":
            tables.add((BRIDGE, table))
            bridges.add(str(br))
            if v6:
                bridges6.add(str(br))
    return Shared(
        frozenset(tables),
        frozenset(bridges),
        frozenset(egress),
        conntrack,
        bool(shape.counts),
        forwarding6,
        frozenset(bridges6),
    )
