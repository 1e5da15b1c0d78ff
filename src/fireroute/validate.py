"""Checks of a new request that go beyond the shape of each option: addresses that can really
be a host's (unicast, not a subnet's network or broadcast address), on-link where they must be,
and consistent with each other. Pure: what the host already holds is checked by the manager
(uplink, leases of every mode, clone addresses, MACs) before anything changes.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Network

from fireroute.errors import UsageError
from fireroute.model import Options, check_vm_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

NOT_UNICAST = (
    (IPv4Network("0.0.0.0/8"), "in 0.0.0.0/8 (this network)"),
    (IPv4Network("127.0.0.0/8"), "a loopback address"),
    (IPv4Network("224.0.0.0/4"), "a multicast address"),
    (IPv4Network("240.0.0.0/4"), "a reserved (class E) or broadcast address"),
)


NOT_UNICAST6 = (
    (IPv6Network("::/8"), "reserved: loopback, unspecified, IPv4-mapped"),
    (IPv6Network("fe80::/10"), "link-local"),
    (IPv6Network("ff00::/8"), "multicast"),
)
"""where an IPv6 pool's guests could not be hosts the host routes to"""


def unicast(ip: IPv4Address, what: str) -> None:
    for net, why in NOT_UNICAST:
        if ip in net:
            raise UsageError(f"{what} {ip} is {why}: it cannot be a host's address")


LINK_LOCAL = IPv4Network("169.254.0.0/16")


def routed(ip: IPv4Address, what: str) -> None:
    """An address the host routes to a VM's link: unicast, and not link-local (no router
    forwards those, and 169.254.169.254 is the metadata address)."""
    unicast(ip, what)
    if ip in LINK_LOCAL:
        raise UsageError(f"{what} {ip} is a link-local address: the host does not route it")


def host_address(iface: IPv4Interface, what: str) -> None:
    """A usable address of its own subnet: unicast, and neither its network nor broadcast."""
    unicast(iface.ip, what)
    net = iface.network
    if net.prefixlen <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        kind = "network" if iface.ip == net.network_address else "broadcast"
        raise UsageError(f"{what} {iface} is the {kind} address of {net}")


def up(names: list[str], o: Options, ready: bool = False) -> None:
    """An up request: each name a VM's (``ready``: or a ready VM's), none twice, one VM where
    an option names one thing (a tap, a CNI attachment, a MAC), then its addresses
    (:func:`request`)."""
    for n in names:
        check_vm_name(n, ready)
    if len(set(names)) != len(names):
        raise UsageError("a vm name was given twice")
    if o.tap is not None and len(names) > 1:
        raise UsageError("--tap names one tap: it cannot be used with several vms")
    if o.mode == "cni" and len(names) > 1:
        raise UsageError("a CNI attachment is one vm: its namespace and ifname name one")
    if o.mac is not None and len(names) > 1:
        raise UsageError("--mac names one MAC: it cannot be used with several vms")
    request(o)


def request(o: Options) -> None:
    """Every address of a request, checked on its own and against the others: those of every
    mode, then the mode's own (:data:`BY_MODE`)."""
    for net, why in NOT_UNICAST:
        if o.mode != "bridge" and o.pool.overlaps(net):
            raise UsageError(f"pool {o.pool} overlaps {net} ({why.split(' (')[0]})")
    for net6, why in NOT_UNICAST6:
        if o.pool6 is not None and o.pool6.overlaps(net6):
            raise UsageError(f"--pool6 {o.pool6} overlaps {net6} ({why})")
    for d in o.dns:
        unicast(d, "--dns")
    if o.mac is not None and o.mac == "00:00:00:00:00:00":
        raise UsageError(f'invalid MAC "{o.mac}": the all-zero address cannot be a guest MAC')
    for check in BY_MODE.get(o.mode, ()):
        check(o)


def ipam(o: Options) -> None:
    """cni: the address and gateway a delegated IPAM plugin gave."""
    if o.guest is not None and o.gateway is not None:
        host_address(IPv4Interface(o.guest), "IPAM address")
        routed(IPv4Interface(o.guest).ip, "IPAM address")
        routed(IPv4Address(o.gateway), "IPAM gateway")


def clone(o: Options) -> None:
    if o.clone_address not in (None, "auto"):
        routed(IPv4Address(o.clone_address), "--clone-address")
    if o.guest:
        host_address(IPv4Interface(o.guest), "--guest-ip")


def bridge_flags(o: Options) -> None:
    """What a bridge guest cannot be given: peers, and with --dhcp what needs its address."""
    if o.allow_peers:
        raise UsageError(
            "--allow-peers applies to nat and clone guests: bridge guests share a LAN segment "
            "and reach each other there (see docs/isolation.md)"
        )
    if o.dhcp:
        for flag, given in (
            ("--allow-metadata", o.allow_metadata),
            ("--allow-host-port", bool(o.allow_host_ports)),
        ):
            if given:
                raise UsageError(
                    f"{flag} needs a known guest address: a --dhcp bridge guest gets no host "
                    "protection to open (use --guest-ip or --range)"
                )
    if o.fix_forward_policy and not o.masquerade:
        raise UsageError(
            "--fix-forward-policy in bridge mode needs --masquerade: only masqueraded bridge "
            "traffic is routed through the host's FORWARD chain"
        )


def bridge_addresses(o: Options) -> None:
    """The bridge's and the guest's address: hosts' addresses, and not the same one."""
    bridge = IPv4Interface(o.bridge_address) if o.bridge_address else None
    guest = IPv4Interface(o.guest) if o.guest else None
    if bridge is not None:
        host_address(bridge, "--bridge-address")
    if guest is not None:
        host_address(guest, "--guest-ip")
        if bridge is not None and guest.ip == bridge.ip:
            raise UsageError(f"--guest-ip {guest.ip} is the bridge's own address")


def bridge_gateway(o: Options) -> None:
    """The guests' router: a host's address on their link, and not the guest's own."""
    if o.gateway is None:
        return
    guest = IPv4Interface(o.guest) if o.guest else None
    link = o.bridge_address or o.guest
    subnet = IPv4Interface(link).network if link else None
    gw = IPv4Address(o.gateway)
    unicast(gw, "--gateway")
    if subnet is not None and gw not in subnet:
        raise UsageError(f"--gateway {gw} is not on the guests' link {subnet}")
    if subnet is not None and gw in (subnet.network_address, subnet.broadcast_address):
        raise UsageError(f"--gateway {gw} is the network or broadcast address of {subnet}")
    if guest is not None and gw == guest.ip:
        raise UsageError(f"--gateway {gw} is the guest's own address")


def bridge_range(o: Options) -> None:
    """--range: inside the bridge's subnet, neither its network nor its broadcast address."""
    if o.addr_range is None or not o.bridge_address:
        return
    first, last = o.range_bounds()
    net = IPv4Interface(o.bridge_address).network
    for a in (first, last):
        if a not in net:
            raise UsageError(f"--range {o.addr_range} leaves the bridge's subnet {net}")
    if first == net.network_address or last == net.broadcast_address:
        raise UsageError(
            f"--range {o.addr_range} includes the network or broadcast address of {net}"
        )
    unicast(first, "--range")


BY_MODE: dict[str, tuple[Callable[[Options], None], ...]] = {
    "cni": (ipam,),
    "clone": (clone,),
    "bridge": (bridge_flags, bridge_addresses, bridge_gateway, bridge_range),
}
"""a mode's own checks, in order (nat has none)"""


def bridge_complete(o: Options) -> None:
    """After an existing bridge's address was read into ``o`` (when not given): what a
    static bridge guest still needs, and that its address is on the bridge's subnet."""
    if o.mode != "bridge" or o.dhcp:
        return
    if o.addr_range is not None and o.bridge_address is None:
        raise UsageError(
            "--range needs --bridge-address (for the guests' prefix), or a bridge that has one"
        )
    if o.bridge_address is None and o.gateway is None:
        raise UsageError(
            "bridge mode with a static guest address needs --bridge-address or --gateway "
            "(the guest's router), or a bridge that has an address"
        )
    if o.bridge_address is not None and o.guest is not None:
        bridge, guest = IPv4Interface(o.bridge_address), IPv4Interface(o.guest)
        if guest.network != bridge.network:
            raise UsageError(f"--guest-ip {guest} is not in the bridge's subnet {bridge.network}")
    request(o)
