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
from fireroute.plan.ops import delete_step
from fireroute.plan.steps import Step
from fireroute.want import clone as want


def down(vm: Vm) -> list[Step]:
    return [delete_step(want.host_veth(vm)), delete_step(want.netns(vm))]
