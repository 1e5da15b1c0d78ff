"""Clone mode (the clone networking guide's namespaced NAT): each clone gets a network
namespace holding a tap with the same name and address for every clone, a veth link to the
host with a unique /30, SNAT of the guest to the veth address and DNAT of the clone's address
to the guest. The host side is an ordinary NAT member (the veth plays the tap).

Where this differs from the guide: the guide gives the veth a /24 but masquerades a /30, and
sets the guest's default route via the host's veth address, which the guest cannot reach; here
the veth link is a /30 and the guest's gateway is the tap address inside the namespace.
"""

from __future__ import annotations

from fireroute.model import Vm
from fireroute.plan.host import LINK_GROUP, owner_alias, owner_args
from fireroute.plan.steps import IP, NFT, SYSCTL, Step

NS_VETH = "veth0"
NS_TABLE = "fireroute_clone"


def up(vm: Vm) -> list[Step]:
    ns, host_veth, net = vm.netns, vm.tap, vm.net
    assert ns is not None and net is not None
    host_ip, ns_ip = net.network_address + 1, net.network_address + 2
    guest = vm.guest_iface_addr
    assert guest is not None
    owner = owner_args(vm)
    del_ns = Step(IP, f"netns del {ns}", f'delete namespace "{ns}"', vm.name)
    del_veth = Step(IP, f"link del dev {host_veth}", f'delete veth "{host_veth}"', vm.name)
    steps = [
        Step(IP, f"netns add {ns}", f'create namespace "{ns}"', vm.name, undo=(del_ns,)),
        Step(
            IP,
            f"link add {host_veth} type veth peer name {NS_VETH} netns {ns}",
            f'create veth "{host_veth}"',
            vm.name,
            undo=(del_veth,),
        ),
        Step(
            IP,
            f"address add {host_ip}/{net.prefixlen} dev {host_veth}",
            f'address veth "{host_veth}"',
            vm.name,
        ),
        Step(
            IP,
            f"link set dev {host_veth} group {LINK_GROUP} alias {owner_alias(vm)} up",
            f'bring up veth "{host_veth}"',
            vm.name,
        ),
    ]
    inside = [
        "link set dev lo up",
        f"tuntap add dev {vm.vm_tap} mode tap{owner}",
        f"address add {vm.tap_ip}/{guest.network.prefixlen} dev {vm.vm_tap}",
        f"link set dev {vm.vm_tap} up",
        f"address add {ns_ip}/{net.prefixlen} dev {NS_VETH}",
        f"link set dev {NS_VETH} up",
        f"route add default via {host_ip}",
    ]
    steps += [Step(IP, line, f'set up namespace "{ns}"', vm.name, netns=ns) for line in inside]
    steps.append(
        Step(SYSCTL, "net.ipv4.ip_forward=1", f'enable forwarding in "{ns}"', vm.name, netns=ns)
    )
    script = (
        f'table ip {NS_TABLE} {{\n  comment "fireroute"\n'
        + "".join(
            f"  chain {name} {{ {header}\n" + "".join(f"    {r}\n" for r in rules) + "  }\n"
            for name, (header, rules) in ns_chains(vm).items()
        )
        + "}\n"
    )
    steps.append(Step(NFT, script, f'set up NAT in namespace "{ns}"', vm.name, netns=ns))
    if vm.clone_address != ns_ip:
        steps.append(
            Step(
                IP,
                f"route add {vm.clone_address}/32 via {ns_ip} dev {host_veth}",
                f"route clone address {vm.clone_address}",
                vm.name,
            )
        )
    return steps


def ns_chains(vm: Vm) -> dict[str, tuple[str, list[str]]]:
    """The chains of the namespace's NAT table (name -> (header, rules)), as ``nft list``
    prints them: SNAT of the guest to the veth address, DNAT of the clone address to it."""
    assert vm.net is not None and vm.guest_iface_addr is not None
    ns_ip = vm.net.network_address + 2
    guest = vm.guest_iface_addr
    return {
        "postrouting": (
            "type nat hook postrouting priority srcnat; policy accept;",
            [f'ip saddr {guest.network} oifname "{NS_VETH}" snat to {ns_ip}'],
        ),
        "prerouting": (
            "type nat hook prerouting priority dstnat; policy accept;",
            [f'iifname "{NS_VETH}" ip daddr {vm.clone_address} dnat to {guest.ip}'],
        ),
    }


def down(vm: Vm) -> list[Step]:
    return [
        Step(IP, f"link del dev {vm.tap}", f'delete veth "{vm.tap}"', vm.name),
        Step(IP, f"netns del {vm.netns}", f'delete namespace "{vm.netns}"', vm.name),
    ]
