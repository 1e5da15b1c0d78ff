"""Steps for host sysctls and conntrack, as ``publish`` writes them beside its nft change (a
VM's own links and sysctls are want/'s objects, made by the compiler: plan/compiler.py)."""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.plan.ops import sysctl_step
from fireroute.plan.steps import Step
from fireroute.want import tap
from fireroute.want.objects import DOOMED_GROUP as DOOMED_GROUP  # (re-exported)
from fireroute.want.objects import FORWARD_KEY as FORWARD_KEY  # (re-exported)
from fireroute.want.objects import LINK_GROUP as LINK_GROUP  # (re-exported)

ALIAS_PREFIX = owner.PREFIX
localnet = tap.localnet


def route_localnet(vm: Vm) -> Step:
    """route_localnet on the VM's host device, for a 127.0.0.1 port. Goes with the device."""
    return sysctl_step(tap.route_localnet(vm))


def flush_udp(vm: Vm, ports: list) -> list[Step]:
    """UDP flows to the host ports just published or unpublished: a datagram of a flow that
    began before would go on to where that flow went (conntrack keeps its path)."""
    from fireroute.plan.steps import CONNTRACK

    steps = []
    for p in ports:
        if p.proto != "udp":
            continue
        at = f" --orig-dst {p.addr}" if p.addr else ""
        steps.append(
            Step(
                CONNTRACK,
                f"-D -p udp{at} --orig-port-dst {p.port}",
                f"forget UDP flows to port {p.port}",
                vm.name,
            )
        )
    return steps
