"""A VM's set and map elements in the shared nftables tables, as typed objects, and the sets
and maps they live in (the tables' layout): the one place that says which elements a VM has.
``up`` adds them, ``down`` removes them, ``check`` expects them and ``restore`` re-adds them.
The element kind lives here, not beside the tables and chains (want/tables.py): a NAT VM's
``up`` imports this module and not that one.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from fireroute import owner
from fireroute.model import NOT_PUBLIC, NOT_PUBLIC6, Net, Options, Vm, merged, of_family
from fireroute.want.objects import Obj
from fireroute.want.shared import BRIDGE, NAT, NAT6, masquerading_bridge, nat_member

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SHARDS = 64  # pairs of egress policy sets (see SETS)
SETS = {
    "masq": "ipv4_addr . ifname",  # guest IP . uplink: masquerade
    "egress": "ifname . ifname",  # tap . uplink: may forward
    "taps": "ifname",  # every tap of ours
    "vms": "ifname . ipv4_addr",  # tap . guest IP: the only source a tap may use
    "peers": "ifname",  # taps whose guests may talk to each other (--allow-peers)
    "metadata": "ifname",  # taps whose guests may reach 169.254.169.254 (--allow-metadata)
    "host_ports": "ifname . inet_proto . inet_service",  # --allow-host-port PORT/PROTO
    # bridge guests with a known address: the tap is a bridge port, so the IP layer sees the
    # bridge; the bridge table's anti-spoofing makes the source address a guest's identity
    "bridged": "ifname . ipv4_addr",  # bridge . guest IP
    "bridged_metadata": "ipv4_addr",  # bridge guests that may reach 169.254.169.254
    "bridged_ports": "ipv4_addr . inet_proto . inet_service",  # a bridge guest's host ports
    # accounting: a counter per element, counted on each lookup (one per packet)
    "acct_tx": "ifname; counter",  # host devices of NAT and clone guests: sent by the guest
    "acct_rx": "ifname; counter",  # the same devices: received by the guest
    # egress policy: tap . destination CIDR the guest may not reach, and exceptions to that,
    # in SHARDS pairs of sets (a tap's pair by its name): the kernel deletes an element of
    # such a set by a walk over it, so a policy change (or a down) cost grew with the VM
    # count; 64 pairs keep a pair at ~190 ranges with 4000 VMs of 3 (bench/ports.py)
    **{
        f"out_{kind}_{k}": "ifname . ipv4_addr; flags interval"
        for k in range(SHARDS)
        for kind in ("deny", "allow")
    },
}
MAPS = {
    # published ports: protocol . host port (every host address), or host address . protocol
    # . host port, to guest address . guest port
    "pub_any": "inet_proto . inet_service : ipv4_addr . inet_service",
    "pub_addr": "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
    # a tap with an egress policy -> the chain of its pair of policy sets
    "out_jump": "ifname : verdict",
}
FILTER_SETS = {
    "ports": "ifname",  # every bridge tap of ours
    "macs": "ifname . ether_addr",  # tap . the guest's MAC: the only one it may send from
    "ipports": "ifname",  # taps whose guest has a fixed address
    "addrs": "ifname . ipv4_addr",  # tap . guest IPv4: the only one it may use (IP and ARP)
    # bridge guests with IPv6: every other port carries no IPv6 at all
    "ports6": "ifname",  # taps whose guest has IPv6
    "addrs6": "ifname . ipv6_addr",  # tap . the guest's /64: the only prefix it may send from
    # tap . the guest's /64 as the 64-bit number its neighbour advertisements' target starts
    # with (ICMPv6 offset 8; nft has no match of the target itself): the only one they name
    "targets6": "typeof iifname . @th,64,64",
}
"""The sets of the ``bridge`` family's table (anti-spoofing on the bridge's ports)"""
SUB64_SETS = ("taps128", "vms128")
"""the ip6 table's sets of sub-/64 guests (want/tables6.py SUB64), last"""
RANK = {name: i for i, name in enumerate((*SETS, *MAPS, *FILTER_SETS, *SUB64_SETS))}
"""The order element lines are written in: the tables' declaration order"""


class NftElement(Obj):
    """A set or map element: ``value`` as ``nft list`` prints it (a map element as
    ``key : value``), tagged with its owner in a comment (``<id>:<vm>``, or ``<id>:bridge:<br>``
    for a masquerading bridge's shared egress element, whose ``vm`` is None)."""

    __slots__ = ("family", "table", "set", "value")
    kind = "nft element"

    def __init__(
        self, family: str, table: str, set_name: str, value: str, owner: str, vm: str | None
    ) -> None:
        self.ns, self.owner, self.vm = None, owner, vm  # (Obj.__init__, inlined: per element)
        self.family = family
        self.table = table
        self.set = set_name
        self.value = value

    @property
    def key(self) -> tuple:
        return (self.ns, self.family, self.table, self.set, self.value)

    def tagged(self) -> str:
        """The element with its comment: after the key (a map element's value follows it)."""
        key, colon, value = self.value.partition(" : ")
        tag = f'comment "{self.owner}"'
        return f"{key} {tag} : {value}" if colon else f"{self.value} {tag}"

    def text(self, verb: str) -> str:
        """``add`` or ``delete``: the one line doing it to this element alone."""
        return f"{verb} element {self.family} {self.table} {self.set} {{ {self.tagged()} }}\n"

    def what(self, verb: str = "add") -> str:
        return f"{verb} {self.value} to set {self.set} of {self.family} {self.table}"


def element_lines(
    verb: str, family: str, table: str, elems: list[NftElement], rank: dict[str, int]
) -> str:
    """One ``verb element`` line per set of ``table`` (the elements' own in every verb), in
    the order ``rank`` gives the sets, each with its elements in the order given."""
    by_set: dict[str, list[str]] = {}
    for e in elems:
        by_set.setdefault(e.set, []).append(e.tagged())
    return "".join(
        f"{verb} element {family} {table} {name} {{ {', '.join(values)} }}\n"
        for name, values in sorted(by_set.items(), key=lambda kv: rank[kv[0]])
    )


def by_set(elems: list[NftElement]) -> dict[str, list[str]]:
    """set -> the elements' values (untagged), as a table's listing is compared with them."""
    out: dict[str, list[str]] = {}
    for e in elems:
        out.setdefault(e.set, []).append(e.value)
    return out


def elements(vm: Vm) -> list[NftElement]:
    """A VM's own elements in its NAT table (less a bridge guest's shared egress element:
    :func:`nat_elements` has it too)."""
    out: list[NftElement] = []

    def add(set_name: str, value: str) -> None:
        out.append(NftElement(NAT, vm.table, set_name, value, vm.tag, vm.name))

    o = vm.options
    src = vm.nat_source
    if vm.mode == "bridge":  # known by its address (see SETS)
        if vm.guest_ip is None:  # DHCP: no address to know the guest by
            return out
        key = str(src)
        add("bridged", f'"{o.bridge}" . {src}')
        if o.masquerade:
            add("masq", f'{src} . "{vm.uplink}"')
        metadata, ports = "bridged_metadata", "bridged_ports"
    else:  # known by its tap
        key = f'"{vm.tap}"'
        add("masq", f'{src} . "{vm.uplink}"')
        add("egress", f'{key} . "{vm.uplink}"')
        add("taps", key)
        add("vms", f"{key} . {src}")
        routed = vm.clone_address  # a clone's own second address, routed to its veth: the
        if routed is not None and routed != src:  # source of its replies, left as src is
            add("masq", f'{routed} . "{vm.uplink}"')
            add("vms", f"{key} . {routed}")
        add("acct_tx", key)
        add("acct_rx", key)
        if o.allow_peers:
            add("peers", key)
        policy(add, vm, 4)
        publish(add, vm, 4)
        metadata, ports = "metadata", "host_ports"
    if o.allow_metadata:
        add(metadata, key)
    for port, proto in o.allow_host_ports:
        add(ports, f'{key} . "{proto}" . {port}')
    return out


ULA = (0xFC << 120, 7)
"""fc00::/7 (unique local addresses) as (first address, prefix length)"""


def unique_local(net: object) -> bool:
    """Is an IPv6 block in fc00::/7 (masqueraded: a routed pool leaves with its own)?"""
    first, length = ULA
    return int(net.network_address) >> (128 - length) == first >> (128 - length)  # type: ignore[attr-defined]


def elements6(vm: Vm) -> list[NftElement]:
    """A NAT VM's elements in the ip6 table of its table's name (want/tables6.py), for a VM
    with IPv6: those keyed by its tap as in the ip table, its /64 where the ip table has its
    address (``vms``; ``masq`` for a block of a unique local pool: a global pool's blocks are
    routed to the host and leave unchanged)."""
    if vm.net6 is None:
        return []
    if vm.mode == "bridge":
        return bridge_elements6(vm)
    out: list[NftElement] = []

    def add(set_name: str, value: str) -> None:
        out.append(NftElement(NAT6, vm.table, set_name, value, vm.tag, vm.name))

    o, key, prefix = vm.options, f'"{vm.tap}"', vm.net6.network_address
    sub64 = vm.net6.prefixlen > 64  # (--prefix6: its /64 is its neighbours' too)
    if sub64:
        prefix = vm.net6.supernet(new_prefix=64).network_address
    if unique_local(vm.net6):
        add("masq", f'{prefix} . "{vm.uplink}"')
    add("egress", f'{key} . "{vm.uplink}"')
    add("taps", key)
    add("vms", f"{key} . {prefix}")
    if sub64:  # (want/tables6.py SUB64: only its exact address passes)
        add("taps128", key)
        add("vms128", f"{key} . {vm.guest6.ip}")  # type: ignore[union-attr]
    add("acct_tx", key)
    add("acct_rx", key)
    if o.allow_peers:
        add("peers", key)
    if o.allow_metadata:
        add("metadata", key)
    for port, proto in o.allow_host_ports:
        add("host_ports", f'{key} . "{proto}" . {port}')
    policy(add, vm, 6)
    publish(add, vm, 6)
    return out


def bridge_elements6(vm: Vm) -> list[NftElement]:
    """A bridge guest's elements in the ip6 table (docs/ipv6.md, bridge): known by (bridge,
    its /64) as in the ip table by (bridge, address), the bridge table's anti-spoofing making
    its source prefix its identity; masqueraded out of the uplink as a NAT VM's /64 is (a
    block of a unique local pool), whatever ``--masquerade`` says of its IPv4."""
    assert vm.net6 is not None
    o, prefix = vm.options, vm.net6.network_address
    out = [NftElement(NAT6, vm.table, "bridged", f'"{o.bridge}" . {prefix}', vm.tag, vm.name)]
    if unique_local(vm.net6):
        out.append(NftElement(NAT6, vm.table, "masq", f'{prefix} . "{vm.uplink}"', vm.tag, vm.name))
    if o.allow_metadata:
        out.append(NftElement(NAT6, vm.table, "bridged_metadata", str(prefix), vm.tag, vm.name))
    for port, proto in o.allow_host_ports:
        value = f'{prefix} . "{proto}" . {port}'
        out.append(NftElement(NAT6, vm.table, "bridged_ports", value, vm.tag, vm.name))
    return out


def policy(add: Callable[[str, str], None], vm: Vm, version: int) -> None:
    """A tap's egress policy in its table of IP ``version``: the jump to its pair of policy
    sets, and its denied and allowed destinations of that family in them."""
    o = vm.options
    if o.egress == "internet" and not o.deny_out and not o.allow_out:
        return  # (most guests)
    deny, allow = egress_cidrs(o, version)
    if deny or allow:
        key, k = f'"{vm.tap}"', shard(vm.tap)
        add("out_jump", f"{key} : jump out_{k}")
        for n in deny:
            add(f"out_deny_{k}", f"{key} . {cidr_text(n)}")
        for n in allow:
            add(f"out_allow_{k}", f"{key} . {cidr_text(n)}")


def publish(add: Callable[[str, str], None], vm: Vm, version: int) -> None:
    """A VM's published ports in its table of IP ``version``, to its guest address of that
    family: a port on every host address in both tables (IPv6's for a VM with IPv6), a port
    on one host address in its address's family's table only (127.0.0.1 has no IPv6 image:
    [::1] cannot be forwarded, docs/ipv6-plan.md F8)."""
    if not vm.options.publish:
        return
    six = vm.guest6
    guest = vm.guest_ip if version == 4 or six is None else six.ip
    for p in vm.options.publish:
        to = f"{guest} . {p.guest_port}"
        if p.addr is None:
            add("pub_any", f'"{p.proto}" . {p.port} : {to}')
        elif (":" in p.addr) == (version == 6):
            add("pub_addr", f'{address_text(p.addr)} . "{p.proto}" . {p.port} : {to}')


def egress_element(table: str, bridge: str, uplink: str, instance: str) -> NftElement:
    """A masquerading bridge's shared (bridge . uplink) egress element, tagged for the bridge
    (``<id>:bridge:<br>``): one per bridge, whatever the number of its guests."""
    tag = owner.tag(instance, owner.bridge_name(bridge))
    return NftElement(NAT, table, "egress", f'"{bridge}" . "{uplink}"', tag, None)


def nat_elements(vm: Vm) -> list[NftElement]:
    """Every element a VM needs in its NAT table: its own, and a masquerading bridge guest's
    shared egress element (what ``check`` expects of it and its table holds while it is up)."""
    if not nat_member(vm):
        return []
    out = elements(vm)
    if masquerading_bridge(vm):
        out.append(egress_element(vm.table, str(vm.options.bridge), vm.uplink, vm.owner))
    return out


def filter_elements(vm: Vm) -> list[NftElement]:
    """A bridge VM's anti-spoofing elements in the bridge family's table."""
    tap = f'"{vm.tap}"'

    def e(set_name: str, value: str) -> NftElement:
        return NftElement(BRIDGE, vm.table, set_name, value, vm.tag, vm.name)

    out = [e("ports", tap), e("macs", f"{tap} . {vm.mac.lower()}")]
    if vm.guest_ip is not None:
        out += [e("ipports", tap), e("addrs", f"{tap} . {vm.guest_ip}")]
    if vm.net6 is not None:
        out += [e("ports6", tap), e("addrs6", f"{tap} . {vm.net6.network_address}")]
        out.append(e("targets6", f"{tap} . {prefix64(vm.net6.network_address)}"))
    return out


def prefix64(address: IPv6Address) -> str:
    """The first 64 bits of an IPv6 ``address`` as nft lists a 64-bit raw field: ``0x…``."""
    return hex(int(address) >> 64)


def shard(tap: str) -> int:
    """The pair of policy sets (and chain) of a tap: by its name, so it never moves. Both
    halves of the 64-bit digest, folded: FNV-1a's top bits alone put 4000 numbered names
    (``fr-p0`` ...) in 8 of 16 pairs, up to 900 in one, and deleting from a pair costs the
    kernel time by the pair's size (bench/interval_set.py)."""
    from fireroute.addressing import digest

    h = int(digest(tap), 16)
    return (h ^ (h >> 32)) % SHARDS


def egress_cidrs(o: Options, version: int = 4) -> tuple[tuple[Net, ...], tuple[Net, ...]]:
    """(denied, allowed) destinations of IP ``version`` (4 or 6) of a guest: ``--egress
    public`` denies what is not public (:data:`NOT_PUBLIC`, :data:`NOT_PUBLIC6`) and the
    host's own networks, ``none`` everything; ``--deny-out`` adds, ``--allow-out`` makes
    exceptions (allow wins). Each family's CIDRs go to its table only."""
    deny = of_family(o.deny_out, version)  # (merged already: Options merges them)
    if o.egress == "public":
        listed = NOT_PUBLIC if version == 4 else NOT_PUBLIC6
        deny = merged([*deny, *listed, *of_family(o.host_nets, version)])
    elif o.egress == "none":
        deny = (IPv4Network("0.0.0.0/0") if version == 4 else IPv6Network("::/0"),)
    return deny, of_family(o.allow_out, version)


def cidr_text(n: Net) -> str:
    """A CIDR as ``nft list`` prints an interval element (a /32 or /128 as the bare
    address)."""
    addr = address_text(str(n.network_address))
    return addr if n.prefixlen == n.max_prefixlen else f"{addr}/{n.prefixlen}"


def address_text(addr: str) -> str:
    """An address as nft prints it: an IPv6 address whose first 80 bits are zero and next
    16 all ones (IPv4-mapped), or whose first 96 are zero and last 32 above 0xffff, ends in
    dotted IPv4 (``::ffff:0.0.0.0``), as inet_ntop writes it; any other as Python does (the
    same compressed form)."""
    if ":" not in addr:
        return addr
    n = int(IPv6Address(addr))
    high, mid, low = n >> 48, (n >> 32) & 0xFFFF, n & 0xFFFFFFFF
    if high == 0 and (mid == 0xFFFF or (mid == 0 and low >> 16)):
        return f"::{'ffff:' if mid else ''}{IPv4Address(low)}"
    return str(IPv6Address(addr))
