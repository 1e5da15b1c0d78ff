"""CNI mode: the VMM runs inside the runtime's network namespace (``CNI_NETNS``), as
firecracker-go-sdk and firecracker-containerd start it. In that namespace: a veth named
``CNI_IFNAME`` whose other end is in the host namespace, and the tap the VMM opens, joined to
the veth by two tc redirects (whatever arrives on one leaves on the other), so the namespace
is a wire and holds no address, route or rule of its own. On the host, the veth's end is an
ordinary NAT member: it carries the tap address (.1 of the /30), and every rule of NAT mode
(masquerade, anti-spoofing, isolation, egress policy, accounting) applies to it as to a tap.

Why redirects rather than routing through the namespace: the host side stays exactly NAT
mode's (the guest's ARP reaches the host veth, which answers for its gateway), the namespace
needs neither forwarding nor addresses, and check has two filters to compare instead of
addresses, routes and a sysctl.
"""

from __future__ import annotations

from fireroute.addressing import cni_link_mac
from fireroute.errors import ConflictError
from fireroute.model import DEFAULT_CNI_TAP, Options, Vm
from fireroute.plan.host import DOOMED_GROUP, LINK_GROUP, owner_alias, owner_args
from fireroute.plan.steps import CALLER, IP, TC, Step

MATCH_ALL = "protocol all u32 match u32 0 0"
"""a u32 filter matching every frame (cls_u32 is in every kernel that has tc at all; matchall
is not always built)"""


def mac(vm: Vm, link: str) -> str:
    """The MAC ``link`` (host, veth, tap) of ``vm`` is made with."""
    assert vm.guest_ip is not None
    return cni_link_mac(link, vm.guest_ip)


def check_namespace(name: str, options: Options, others: list[Vm]) -> None:
    """Several attachments may share a namespace (a VM with two NICs, a pod on two networks)
    when each has its own names there: the veth (ifname) and the tap (tapName) of ``name``
    must be no other attachment's, or ConflictError names the attachment that has it."""
    mine = {str(options.ifname): "ifname", options.tap or DEFAULT_CNI_TAP: '"tapName"'}
    for vm in others:
        if vm.name == name or vm.mode != "cni":
            continue
        theirs = {str(vm.options.ifname): "veth", vm.vm_tap: "tap"}
        for dev, key in mine.items():
            if dev in theirs:
                o = vm.options
                raise ConflictError(
                    f'network namespace "{options.netns}" already has "{dev}": the '
                    f'{theirs[dev]} of vm "{vm.name}" (network "{o.network}", container '
                    f'"{o.container}", ifname "{o.ifname}"); give this attachment another {key}'
                )


def redirects(vm: Vm) -> list[tuple[str, str]]:
    """(from, to): the two redirects joining the veth and the tap in the VM's namespace."""
    veth, tap = str(vm.options.ifname), vm.vm_tap
    return [(veth, tap), (tap, veth)]


def up(vm: Vm) -> list[Step]:
    ns, host_veth, veth, tap = vm.netns, vm.tap, str(vm.options.ifname), vm.vm_tap
    assert ns is not None and vm.net is not None
    mtu = f" mtu {vm.options.mtu}" if vm.options.mtu else ""
    alias = owner_alias(vm)
    where = f'in "{ns}"'
    del_veth = Step(IP, f"link del dev {host_veth}", f'delete veth "{host_veth}"', vm.name)
    del_tap = Step(IP, f"link del dev {tap}", f'delete tap "{tap}" {where}', vm.name, netns=ns)
    steps = [
        Step(
            IP,
            f"link add {veth} address {mac(vm, 'veth')} type veth peer name {host_veth} "
            f"address {mac(vm, 'host')} netns {CALLER}",
            f'create veth "{veth}" {where}',
            vm.name,
            undo=(del_veth,),
            netns=ns,
        ),
        Step(
            IP,
            f"tuntap add dev {tap} mode tap{owner_args(vm)}",
            f'create tap "{tap}" {where}',
            vm.name,
            undo=(del_tap,),
            netns=ns,
        ),
        Step(
            IP,
            f"link set dev {veth}{mtu} alias {alias} up",
            f'bring up "{veth}"',
            vm.name,
            netns=ns,
        ),
        Step(
            IP,
            f"link set dev {tap}{mtu} address {mac(vm, 'tap')} alias {alias} up",
            f'bring up "{tap}"',
            vm.name,
            netns=ns,
        ),
    ]
    for src, dst in redirects(vm):
        steps += [
            Step(
                TC,
                f"qdisc add dev {src} ingress",
                f'redirect "{src}" to "{dst}"',
                vm.name,
                netns=ns,
            ),
            Step(
                TC,
                f"filter add dev {src} parent ffff: {MATCH_ALL} action mirred egress redirect "
                f"dev {dst}",
                f'redirect "{src}" to "{dst}"',
                vm.name,
                netns=ns,
            ),
        ]
    steps += [
        Step(
            IP,
            f"address add {host_address(vm)} dev {host_veth}",
            f'address veth "{host_veth}"',
            vm.name,
        ),
        Step(
            IP,
            f"link set dev {host_veth}{mtu} group {LINK_GROUP} alias {alias} up",
            f'bring up veth "{host_veth}"',
            vm.name,
        ),
    ]
    if vm.delegated:
        steps.append(
            Step(IP, host_route(vm), f'route guest {vm.guest_ip} to "{host_veth}"', vm.name)
        )
    return steps


def host_address(vm: Vm) -> str:
    """The host veth's address: the block's first (the guest's gateway), or, for an address
    from IPAM, the gateway alone (a /32: many attachments share one gateway and subnet, each
    on its own veth, and the host reaches each guest by its /32 route)."""
    assert vm.net is not None
    return f"{vm.tap_ip}/32" if vm.delegated else f"{vm.tap_ip}/{vm.net.prefixlen}"


def host_route(vm: Vm) -> str:
    return f"route add {vm.guest_ip}/32 dev {vm.tap}"


def down(vm: Vm) -> list[Step]:
    """The tap and the veth, inside the namespace, in one group delete: the kernel unregisters
    them and the veth's host end together, waiting once for RCU instead of once per link.
    Then the host end by name, should it be left (the namespace end renamed or moved away).
    A namespace the runtime already removed took everything with it: "no such file" and
    "cannot find device" count as done."""
    ns, veth, tap = vm.netns, str(vm.options.ifname), vm.vm_tap
    mark = f"group {DOOMED_GROUP}"
    return [
        Step(IP, f"link set dev {tap} {mark}", f'delete tap "{tap}"', vm.name, netns=ns),
        Step(IP, f"link set dev {veth} {mark}", f'delete veth "{veth}"', vm.name, netns=ns),
        Step(IP, f"link del {mark}", f'delete the links in "{ns}"', vm.name, netns=ns),
        Step(IP, f"link del dev {vm.tap}", f'delete veth "{vm.tap}"', vm.name),
    ]
