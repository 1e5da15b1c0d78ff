"""Clone mode (the clone networking guide's namespaced NAT): each clone gets a network
namespace holding a tap with the same name and address for every clone, a veth link to the
host with a unique /30, SNAT of the guest to the veth address and DNAT of the clone's address
to the guest. The host side is an ordinary NAT member (the veth plays the tap).

Where this differs from the guide: the guide gives the veth a /24 but masquerades a /30, and
sets the guest's default route via the host's veth address, which the guest cannot reach; here
the veth link is a /30 and the guest's gateway is the tap address inside the namespace.

A clone's objects: its namespace, the veth link to the host (a /30: ``addressing.veth_pair``),
inside the namespace lo, the guest's tap, the veth's far end, the default route and
forwarding, the namespace's NAT table; on the host the route to an explicit clone address.

A clone with IPv6 (docs/ipv6-plan.md 1.11): the guest keeps one fixed address in every
namespace (``model.DEFAULT_CLONE_GUEST6``); the clone's own is its /64's ``::2`` (the clone
address, on the veth's far end), and NAT66 in an ``ip6`` table of the namespace maps the one to
the other. The host end of the veth is set up as a NAT tap with IPv6 is (``fe80::1``, the route
to the clone's /64, no link-local address of the kernel's); in the namespace the tap holds
``fe80::1`` too (the guest's gateway) with the route to the guest's /64, the veth's far end
routes everything via ``fe80::1``, and IPv6 forwards. Both links in the namespace are brought
up with no address generation (no link-local address of the kernel's: the veth has carrier
at once, the tap once its VMM attaches), which their ``addr_gen_mode`` sysctls record.
"""

from __future__ import annotations

from ipaddress import IPv6Interface

from fireroute.addressing import GATEWAY6, guest6, veth_pair
from fireroute.model import Vm
from fireroute.want import tap
from fireroute.want.netns import Netns, Route
from fireroute.want.objects import FORWARD6_KEY, FORWARD_KEY, Addr, Link, Obj, Sysctl
from fireroute.want.tables import NftChain, NftTable
from fireroute.want.tap import ADDR_GEN6

NS_VETH = "veth0"
NS_TABLE = "fireroute_clone"
POSTROUTING = "type nat hook postrouting priority srcnat; policy accept;"
PREROUTING = "type nat hook prerouting priority dstnat; policy accept;"
FORWARD = "type filter hook forward priority filter; policy accept;"


def netns(vm: Vm) -> Netns:
    assert vm.netns is not None
    return Netns(vm.netns, vm.tag, vm.name)


def addrgen(vm: Vm) -> str | None:
    """A link's address generation for a clone with IPv6: none (set in the line that brings
    it up); else the kernel's default."""
    return "none" if vm.net6 is not None else None


def host_veth(vm: Vm) -> Link:
    """The host end, made with its far end (``veth0``) in the namespace."""
    alias, far = tap.alias(vm), (vm.netns, NS_VETH)
    return Link(vm.tap, "veth", vm.tag, vm.name, alias, peer=far, addrgen=addrgen(vm))


def host_address(vm: Vm, veth: Link) -> Addr:
    """The host end's address: the first of the veth link's block."""
    assert vm.net is not None
    return Addr(veth, f"{veth_pair(vm.net)[0]}/{vm.net.prefixlen}")


def table(vm: Vm) -> NftTable:
    """The namespace's NAT table."""
    return NftTable(
        "ip", NS_TABLE, f'set up NAT in namespace "{vm.netns}"', vm.tag, vm.name, vm.netns
    )


def chains(vm: Vm) -> list[NftChain]:
    """Its chains: SNAT of the guest to the namespace's veth address, DNAT of the clone
    address to it, and the guest's source checked as it is forwarded (SNAT rewrites only the
    guest's network: a forged source would leave unchanged, as a neighbour's address on the
    neighbour's established flow, which the host's conntrack knows by address alone);
    written as ``nft list`` prints them."""
    assert vm.net is not None and vm.guest_iface_addr is not None
    nat = table(vm)
    ns_ip = veth_pair(vm.net)[1]
    guest = vm.guest_iface_addr
    snat = f'ip saddr {guest.network} oifname "{NS_VETH}" snat to {ns_ip}'
    dnat = f'iifname "{NS_VETH}" ip daddr {vm.clone_address} dnat to {guest.ip}'
    guard = f'iifname "{vm.vm_tap}" ip saddr != {guest.network} drop'
    return [
        NftChain(nat, "postrouting", POSTROUTING, (snat,)),
        NftChain(nat, "prerouting", PREROUTING, (dnat,)),
        NftChain(nat, "forward", FORWARD, (guard,)),
    ]


def address6(vm: Vm) -> IPv6Interface:
    """The clone's IPv6 address: its /64's ``::2`` (on the veth's far end)."""
    assert vm.net6 is not None
    return guest6(vm.net6)


def table6(vm: Vm) -> NftTable:
    """The namespace's NAT66 table (beside the IPv4 one, of the same name)."""
    words = f'set up NAT66 in namespace "{vm.netns}"'
    return NftTable("ip6", NS_TABLE, words, vm.tag, vm.name, vm.netns)


def chains6(vm: Vm) -> list[NftChain]:
    """Its chains: SNAT of the guest's /64 to the clone address, DNAT of the clone address to
    the guest, the guest's source checked as it is forwarded (as :func:`chains`); as ``nft
    list`` prints them."""
    guest = vm.guest6
    assert guest is not None
    nat, clone_ip = table6(vm), address6(vm).ip
    snat = f'ip6 saddr {guest.network} oifname "{NS_VETH}" snat to {clone_ip}'
    dnat = f'iifname "{NS_VETH}" ip6 daddr {clone_ip} dnat to {guest.ip}'
    guard = f'iifname "{vm.vm_tap}" ip6 saddr != {guest.network} drop'
    return [
        NftChain(nat, "postrouting", POSTROUTING, (snat,)),
        NftChain(nat, "prerouting", PREROUTING, (dnat,)),
        NftChain(nat, "forward", FORWARD, (guard,)),
    ]


def inside6(vm: Vm, tun: Link, far: Link) -> list[Obj]:
    """A clone's IPv6 in its namespace: the tap's gateway address and the route to the
    guest's /64, the clone address on the veth's far end and the default route via the host
    end, both links' address generation off, forwarding, the NAT66 table."""
    ns, guest = vm.netns, vm.guest6
    assert ns is not None and guest is not None
    who = (vm.tag, vm.name)
    route = f'route {guest.network} to "{tun.name}" in "{ns}"'
    no_lla = "keep the kernel's link-local address off"
    return [
        Addr(tun, f"{GATEWAY6}/64", nodad=True),
        Addr(far, str(address6(vm)), nodad=True),
        Route("::/0", str(GATEWAY6), NS_VETH, f'route "{ns}" via the host (IPv6)', *who, ns),
        Route(str(guest.network), None, tun.name, route, *who, ns),
        Sysctl(FORWARD6_KEY, "1", f'enable IPv6 forwarding in "{ns}"', *who, ns),
        *(
            Sysctl(ADDR_GEN6.format(link.name), "1", f'{no_lla} "{link.name}"', *who, ns)
            for link in (tun, far)
        ),
        table6(vm),
        *chains6(vm),
    ]


def clone(vm: Vm) -> list[Obj]:
    """Every object of a clone, in creation order."""
    ns, net, guest = vm.netns, vm.net, vm.guest_iface_addr
    assert ns is not None and net is not None and guest is not None
    host_ip, ns_ip = veth_pair(net)
    uid, gid = tap.owner_ids(vm)
    who = (vm.tag, vm.name)
    veth, gen = host_veth(vm), addrgen(vm)
    lo = Link("lo", "loopback", *who, "", ns=ns, group=None, made=False)
    tun = Link(vm.vm_tap, "tun", *who, "", ns=ns, uid=uid, gid=gid, group=None, addrgen=gen)
    peer = (None, vm.tap)
    far = Link(NS_VETH, "veth", *who, "", ns=ns, group=None, peer=peer, made=False, addrgen=gen)
    objs: list[Obj] = [
        netns(vm),
        veth,
        host_address(vm, veth),
        lo,
        tun,
        Addr(tun, f"{vm.tap_ip}/{guest.network.prefixlen}"),
        far,
        Addr(far, f"{ns_ip}/{net.prefixlen}"),
        Route("default", str(host_ip), None, f'route "{ns}" via the host', *who, ns),
        Sysctl(FORWARD_KEY, "1", f'enable forwarding in "{ns}"', *who, ns),
        table(vm),
        *chains(vm),
    ]
    if vm.clone_address != ns_ip:
        words = f"route clone address {vm.clone_address}"
        objs.append(Route(f"{vm.clone_address}/32", str(ns_ip), vm.tap, words, *who))
    if vm.net6 is not None:  # (the host end's as a NAT tap's with IPv6)
        objs += [*inside6(vm, tun, far), *tap.ipv6_on(vm, veth)]
    return objs
