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

from fireroute.model import Vm
from fireroute.plan.ops import delete_step
from fireroute.plan.steps import IP, Step
from fireroute.want import cni as want
from fireroute.want.objects import DOOMED_GROUP


def down(vm: Vm) -> list[Step]:
    """The tap and the veth, inside the namespace, in one group delete: the kernel unregisters
    them and the veth's host end together, waiting once for RCU instead of once per link.
    Then the host end by name, should it be left (the namespace end renamed or moved away).
    A namespace the runtime already removed took everything with it: "no such file" and
    "cannot find device" count as done."""
    ns, veth, tap = vm.netns, want.veth(vm).name, want.tun(vm).name
    mark = f"group {DOOMED_GROUP}"
    return [
        Step(IP, f"link set dev {tap} {mark}", f'delete tap "{tap}"', vm.name, netns=ns),
        Step(IP, f"link set dev {veth} {mark}", f'delete veth "{veth}"', vm.name, netns=ns),
        Step(IP, f"link del {mark}", f'delete the links in "{ns}"', vm.name, netns=ns),
        delete_step(want.host_veth(vm)),
    ]
