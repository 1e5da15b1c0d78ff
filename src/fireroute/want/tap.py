"""A NAT or bridge VM's tap on the host, and the per-device sysctls of a VM's host device:
the one place that says what they are."""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.want.netns import Route
from fireroute.want.objects import Addr, Link, Obj, Sysctl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

MODES = ("nat", "bridge")
"""the modes whose VM device on the host is its tap"""
DISABLE6 = "net/ipv6/conf/{}/disable_ipv6"
ADDR_GEN6 = "net/ipv6/conf/{}/addr_gen_mode"
DEVICE_SYSCTLS = {
    DISABLE6: "1",
    "net/ipv4/conf/{}/route_localnet": "1",
    ADDR_GEN6: "1",
    "net/ipv4/conf/{}/proxy_arp": "1",  # (a CNI host veth of an IPAM subnet with allowPeers)
    "net/ipv4/neigh/{}/proxy_delay": "0",
}
"""every per-device sysctl a VM's host device (tap or veth) may get, with the value fireroute
writes (a v6 tap's ``disable_ipv6``: 0): the reader (kernel/read.py) reads these, so a new one
is an entry here and a call of ``device_sysctl``"""


def device_sysctl(vm: Vm, form: str, words: str, value: str | None = None) -> Sysctl:
    """The sysctl ``form`` (of DEVICE_SYSCTLS) of the VM's host device, at fireroute's value
    (or ``value``)."""
    value = DEVICE_SYSCTLS[form] if value is None else value
    return Sysctl(form.format(vm.tap), value, words, vm.tag, vm.name)


def alias(vm: Vm) -> str:
    """The owner tag carried by each link we create for a VM (its ifalias)."""
    return owner.alias(vm.owner, vm.name)


def owner_ids(vm: Vm) -> tuple[int, int | None]:
    """(uid, gid) of a VM's tap: root unless ``--owner`` names the jailed VMM's user, so no
    other local user can attach to it through /dev/net/tun."""
    o = vm.options.owner
    return (0, None) if o is None else (o.uid, o.gid)


def link(vm: Vm) -> Link:
    """The tap: a bridge port for a bridge VM, else addressed (see ``tap``)."""
    uid, gid = owner_ids(vm)
    master = str(vm.options.bridge) if vm.mode == "bridge" else None
    gen = "none" if master is None and vm.net6 is not None else None  # (see ipv6_on)
    return Link(
        vm.tap, "tun", vm.tag, vm.name, alias(vm), uid=uid, gid=gid, master=master, addrgen=gen
    )


def address(vm: Vm, tun: Link) -> Addr:
    """A NAT tap's address: the guest's gateway in the VM's block."""
    assert vm.net is not None
    return Addr(tun, f"{vm.tap_ip}/{vm.net.prefixlen}")


def ipv6_off(vm: Vm) -> Sysctl:
    """No IPv6 on a NAT tap (or a CNI host veth): without it a guest could reach the host over
    the device's link-local (or any host) IPv6 address, around the IPv4 isolation rules."""
    return device_sysctl(vm, "net/ipv6/conf/{}/disable_ipv6", f'disable IPv6 on "{vm.tap}"')


def ipv6_on(vm: Vm, tun: Link) -> list[Obj]:
    """A NAT tap of a VM with IPv6 (docs/ipv6-plan.md 1.3): IPv6 on, no link-local address of
    the kernel's own (addr_gen_mode 1, set before the VMM brings carrier: set after, the
    kernel's address stays; a tap up makes is brought up with ``addrgenmode none``, and
    kernel/scope.py ``born`` counts the sysctl as set by it), the guest's gateway (its own,
    ``Vm.gateway6_text``) usable at once (no DAD), and the route to the VM's /64. The
    address and the route follow the sysctls (a host whose default is ``disable_ipv6=1``
    refuses the address before). :func:`v6_tap` tells such a tap as found."""
    assert vm.net6 is not None
    net6 = str(vm.net6)  # (an IPv6 network's text is dear: made once)
    return [
        device_sysctl(vm, DISABLE6, f'enable IPv6 on "{vm.tap}"', "0"),
        device_sysctl(vm, ADDR_GEN6, f'keep the kernel\'s link-local address off "{vm.tap}"'),
        Addr(tun, f"{vm.gateway6_text}/64", nodad=True),
        Route(net6, None, vm.tap, f'route {net6} to "{vm.tap}"', vm.tag, vm.name),
    ]


def kernel_routes6(route: Route, gw: str) -> list[Route]:
    """The routes the kernel made itself on the tap of ``route`` (a VM's /64, as found) for
    the gateway address ``gw`` (:func:`ipv6_on`'s, as found: ``fe80::1:…``, or ``fe80::1``
    for a lease that predates gateways of their own): its prefix ``fe80::/64``; in the local
    table the address, the subnet-router anycast ``fe80::`` (while forwarding is on) and the
    multicast ``ff00::/8``. No verb wants them; a group delete of many such taps deletes them
    first (plan/compiler.py ``_taps_down``: a device going walks every IPv6 route of the
    namespace, so N taps going as one group cost the square of N, less with their routes
    gone before, bench/tap_delete6.py). One missing (an operator deleted it) is done."""
    dev, who = route.dev, (route.owner, route.vm)
    return [
        Route("fe80::/64", None, dev, f'the kernel\'s route fe80::/64 to "{dev}"', *who),
        *(
            Route(dst, None, dev, f'the kernel\'s {what} route to "{dev}"', *who, table="local")
            for dst, what in (
                (f"{gw}/128", "local"),
                ("fe80::/128", "anycast"),
                ("ff00::/8", "multicast"),
            )  # fmt: skip
        ),
    ]


def v6_tap(disable6: str | None, addr_gen: str | None, cidrs: Collection[str] = ()) -> bool:
    """Is a device of fireroute's, as found, the tap of a VM with IPv6 (what :func:`ipv6_on`
    makes of it)? IPv6 on (``disable_ipv6`` 0) and set up by fireroute: the kernel's own
    link-local address off (``addr_gen_mode`` 1) or, that changed behind its back, a
    gateway (:func:`gateway6`) there (``cidrs``: the device's IPv6 addresses added without
    DAD, as ``ip address`` prints them: fireroute adds its gateways ``nodad``, the kernel its
    own link-local addresses never, and one of those may read ``fe80::1:XXff:fe..``).
    A bridge port or a clone's veth has IPv6 on, but neither. The one answer of the reader
    (kernel/read.py: what of such a tap is an object), of a down's read (kernel/scope.py:
    IPv6 forwarding stays while such a tap does) and of the diff (plan/diff.py: the same,
    over what was found)."""
    return disable6 == "0" and (addr_gen == "1" or any(map(gateway6, cidrs)))


def gateway6(cidr: str) -> bool:
    """Is ``cidr`` (as ``ip address`` prints it) a tap's IPv6 gateway as :func:`ipv6_on`
    gives it: ``fe80::1/64`` or a VM's own ``fe80::1:X:Y:Z/64``?"""
    return cidr == "fe80::1/64" or (cidr.startswith("fe80::1:") and cidr.endswith("/64"))


def localnet(vm: Vm) -> bool:
    """Has the VM a port published on the host's 127.0.0.1?"""
    return any(p.addr == "127.0.0.1" for p in vm.options.publish)


def route_localnet(vm: Vm) -> Sysctl:
    """A connection to a 127.0.0.1 port is forwarded out of this device: the kernel routes a
    loopback source out of a device only with route_localnet on it (on this device alone; the
    NAT table drops a guest's own packets to 127.0.0.0/8)."""
    words = f'let "{vm.tap}" carry connections to 127.0.0.1'
    return device_sysctl(vm, "net/ipv4/conf/{}/route_localnet", words)


def tap(vm: Vm) -> list[Obj]:
    """A NAT or bridge VM's tap and what goes with it, in creation order. NAT: the tap, its
    address, IPv6 off or (a VM with IPv6) on (and route_localnet for a 127.0.0.1 port).
    Bridge: the tap as a port of the bridge, nothing else."""
    assert vm.mode in MODES
    tun = link(vm)
    if vm.mode == "bridge":
        return [tun]
    v6 = ipv6_on(vm, tun) if vm.net6 is not None else [ipv6_off(vm)]
    out: list[Obj] = [tun, address(vm, tun), *v6]
    return out + ([route_localnet(vm)] if localnet(vm) else [])
