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

An attachment's objects. In the runtime's namespace: the veth (made there with its host end,
both MACs fixed) and the tap the VMM opens, joined by two tc redirects, both with IPv6 off (a
wire has no address of its own: the redirects take every frame below the IP layer, so a
guest's IPv6 passes them whatever the links' IPv6 is). On the host: the veth's end, its
address (the block's first, or an IPAM gateway alone as a /32), the route to a delegated
guest (and proxy ARP, for one that may reach its peers), IPv6 off; or, for a VM with IPv6,
the host end set up as a NAT tap with IPv6 is (want/tap.py ``ipv6_on``: ``fe80::1/64`` without
DAD, the route to the VM's /64, no link-local address of the kernel's: ``addrgenmode none`` in
the line that brings it up, as it has carrier at once). Taken down (plan/compiler.py), the
links in the namespace go as one group delete: the kernel unregisters them and the veth's host
end together, waiting once for RCU; a namespace the runtime already removed took everything with it.
"""

from __future__ import annotations

from fireroute.addressing import cni_link_mac
from fireroute.model import Vm
from fireroute.want import tap
from fireroute.want.netns import Route, TcRedirect
from fireroute.want.objects import Addr, Link, Obj, Sysctl


def mac(vm: Vm, link: str) -> str:
    """The MAC ``link`` (host, veth, tap) of ``vm`` is made with."""
    assert vm.guest_ip is not None
    return cni_link_mac(link, vm.guest_ip)


def inside(vm: Vm, name: str, link_kind: str, **kw) -> Link:
    """A link of the attachment in its namespace: tagged, not grouped, with its MTU."""
    alias = tap.alias(vm)
    return Link(
        name, link_kind, vm.tag, vm.name, alias, vm.netns, mtu=vm.options.mtu, group=None, **kw
    )


def veth(vm: Vm) -> Link:
    """The veth in the namespace (``ifname``), made there with its host end in root."""
    macs = {"mac": mac(vm, "veth"), "peer_mac": mac(vm, "host")}
    return inside(vm, str(vm.options.ifname), "veth", peer=(None, vm.tap), **macs)


def tun(vm: Vm) -> Link:
    """The tap the VMM opens, in the namespace; its MAC is set when it is brought up."""
    uid, gid = tap.owner_ids(vm)
    return inside(vm, vm.vm_tap, "tun", uid=uid, gid=gid, mac=mac(vm, "tap"))


def redirects(vm: Vm) -> list[TcRedirect]:
    """The two redirects joining the veth and the tap: veth to tap, tap to veth."""
    a, b = str(vm.options.ifname), vm.vm_tap
    return [
        TcRedirect(a, b, vm.tag, vm.name, vm.netns),
        TcRedirect(b, a, vm.tag, vm.name, vm.netns),
    ]


def ipv6_off(vm: Vm, link: Link) -> Sysctl:
    """No IPv6 on a link in the namespace: no link-local address, DAD, router or multicast
    listener messages of its own on the guest's wire or towards the host."""
    where = f'"{link.name}" in "{link.ns}"'
    path = tap.DISABLE6.format(link.name)
    return Sysctl(path, "1", f"disable IPv6 on {where}", vm.tag, vm.name, link.ns)


def host_veth(vm: Vm) -> Link:
    """The veth's host end, made by the namespace's add line (no add line of its own); for a
    VM with IPv6, brought up with no address generation (it has carrier at once)."""
    return Link(
        vm.tap,
        "veth",
        vm.tag,
        vm.name,
        tap.alias(vm),
        peer=(vm.netns, str(vm.options.ifname)),
        made=False,
        mac=mac(vm, "host"),
        mtu=vm.options.mtu,
        addrgen="none" if vm.net6 is not None else None,
    )


def host_address(vm: Vm, link: Link) -> Addr:
    """The block's first (the guest's gateway), or, for an address from IPAM, the gateway
    alone (a /32: many attachments share one gateway and subnet, each on its own veth, and
    the host reaches each guest by its /32 route)."""
    assert vm.net is not None
    return Addr(link, f"{vm.tap_ip}/{32 if vm.delegated else vm.net.prefixlen}")


def host_route(vm: Vm) -> Route | None:
    """The host's route to a delegated guest, on its veth."""
    if not vm.delegated:
        return None
    words = f'route guest {vm.guest_ip} to "{vm.tap}"'
    return Route(f"{vm.guest_ip}/32", None, vm.tap, words, vm.tag, vm.name)


PROXY_ARP = "net/ipv4/conf/{}/proxy_arp"
PROXY_DELAY = "net/ipv4/neigh/{}/proxy_delay"
HOST_VETH_SYSCTLS = (PROXY_ARP, PROXY_DELAY)
"""the per-device sysctls (want/tap.py ``DEVICE_SYSCTLS``) only an attachment's host veth
has: the reader (kernel/read.py) reads them on veths of ours alone"""


def peers_on_link(vm: Vm) -> list[Sysctl]:
    """For a guest of an IPAM subnet whose peers it may reach (``allowPeers``): proxy ARP on
    its host veth, answering at once. Such a guest takes the subnet's other addresses as
    on-link (its ``ip=`` has the subnet's netmask, and a kernel's ``ip=`` needs its gateway
    inside it) and asks for them by ARP; the host answers with the veth's MAC for an address
    it routes out of another device (a peer's /32 on its veth), and the frame is forwarded as
    any guest's, through the isolation rules (the ``peers`` set lets both ends' traffic
    through). Without ``allowPeers`` nothing answers, and the rules drop it anyway."""
    if not (vm.delegated and vm.options.allow_peers):
        return []
    where = f'"{vm.tap}"'
    return [
        tap.device_sysctl(vm, PROXY_ARP, f"answer ARP for the guest's peers on {where}"),
        tap.device_sysctl(vm, PROXY_DELAY, f"answer proxy ARP on {where} without delay"),
    ]


def cni(vm: Vm) -> list[Obj]:
    """Every object of an attachment: the namespace's, then the host's, in creation order."""
    host = host_veth(vm)
    route = host_route(vm)
    wire = [veth(vm), tun(vm)]
    v6 = tap.ipv6_on(vm, host) if vm.net6 is not None else [tap.ipv6_off(vm)]
    return [
        *wire,
        *redirects(vm),
        *(ipv6_off(vm, link) for link in wire),
        host,
        host_address(vm, host),
        *([route] if route else []),
        *peers_on_link(vm),
        *v6,
    ]
