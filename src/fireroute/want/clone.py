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
"""

from __future__ import annotations

from fireroute.addressing import veth_pair
from fireroute.model import Vm
from fireroute.want import tap
from fireroute.want.netns import Netns, Route
from fireroute.want.objects import FORWARD_KEY, Addr, Link, Obj, Sysctl
from fireroute.want.tables import NftChain, NftTable

NS_VETH = "veth0"
NS_TABLE = "fireroute_clone"


def netns(vm: Vm) -> Netns:
    assert vm.netns is not None
    return Netns(vm.netns, vm.tag, vm.name)


def host_veth(vm: Vm) -> Link:
    """The host end, made with its far end (``veth0``) in the namespace."""
    return Link(vm.tap, "veth", vm.tag, vm.name, tap.alias(vm), peer=(vm.netns, NS_VETH))


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
    address to it; written as ``nft list`` prints them."""
    assert vm.net is not None and vm.guest_iface_addr is not None
    nat = table(vm)
    ns_ip = veth_pair(vm.net)[1]
    guest = vm.guest_iface_addr
    snat = f'ip saddr {guest.network} oifname "{NS_VETH}" snat to {ns_ip}'
    dnat = f'iifname "{NS_VETH}" ip daddr {vm.clone_address} dnat to {guest.ip}'
    return [
        NftChain(
            nat,
            "postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
            (snat,),
        ),
        NftChain(
            nat, "prerouting", "type nat hook prerouting priority dstnat; policy accept;", (dnat,)
        ),
    ]


def clone(vm: Vm) -> list[Obj]:
    """Every object of a clone, in creation order."""
    ns, net, guest = vm.netns, vm.net, vm.guest_iface_addr
    assert ns is not None and net is not None and guest is not None
    host_ip, ns_ip = veth_pair(net)
    uid, gid = tap.owner_ids(vm)
    who = (vm.tag, vm.name)
    veth = host_veth(vm)
    lo = Link("lo", "loopback", *who, "", ns=ns, group=None, made=False)
    tun = Link(vm.vm_tap, "tun", *who, "", ns=ns, uid=uid, gid=gid, group=None)
    far = Link(NS_VETH, "veth", *who, "", ns=ns, group=None, peer=(None, vm.tap), made=False)
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
    return objs
