"""A bridge fireroute makes for its bridge-mode VMs: the link (tagged
``fireroute:<state id>:bridge:<name>``) and the address ``--bridge-address`` gives it. A bridge
found in place is adopted instead: never addressed, never removed (but for the IPv6 gateway of
its guests with IPv6, below).

IPv6 (docs/ipv6.md, bridge): a bridge guest with ``--ipv6`` gets a /64 of its own from the v6
pool, as a NAT VM does, routed onto the bridge (:func:`route6`); its gateway is ``fe80::1`` on
the bridge (:func:`gateway6`, while a guest with IPv6 is on it), as on every v6 tap. So the
guest configures itself exactly as a NAT guest does (``::2``/64, default via ``fe80::1``; or by
SLAAC from the RA the responder writes onto its tap alone, advertise_bridge.py), and its
source /64 is one masked lookup at the bridge port and in the ip6 table."""

from __future__ import annotations

from fireroute import owner
from fireroute.model import Vm
from fireroute.want.netns import Route
from fireroute.want.objects import Addr, Link, Obj


def alias(instance: str, bridge: str) -> str:
    """``fireroute:<state id>:bridge:<name>``: a bridge this state file created."""
    return owner.alias(instance, owner.bridge_name(bridge))


def mac(instance: str, bridge: str) -> str:
    """The MAC of a bridge fireroute makes: fixed (locally administered, ``0E:`` and a 40-bit
    FNV-1a hash of the making state file's id and the bridge's name), so the bridge keeps it.
    A bridge made without one takes the lowest MAC of its ports, and changes it when a guest's
    tap with a lower one joins or that port leaves: its guests' neighbour entries for their
    gateway then point nowhere until they expire. The state file's id (random, made once)
    keeps two hosts' bridges of one name apart, should they ever share a segment; another
    state file uses the bridge as it finds it."""
    h = 0xCBF29CE484222325
    for b in f"{instance}:{bridge}".encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "0E:" + ":".join(f"{(h >> s) & 0xFF:02X}" for s in (32, 24, 16, 8, 0))


def link(vm: Vm) -> Link:
    """The bridge ``vm`` is a port of, as the state file holding ``vm`` would make it."""
    br = str(vm.options.bridge)
    tag = owner.tag(vm.owner, owner.bridge_name(br))
    return Link(br, "bridge", tag, vm.name, alias(vm.owner, br), mac=mac(vm.owner, br))


def bridge(vm: Vm) -> list[Obj]:
    """The bridge and its address (if one is asked for), in creation order."""
    br = link(vm)
    given = vm.options.bridge_address
    return [br, *([Addr(br, str(given))] if given else [])]


def gateway6(br: Link) -> Addr:
    """The guests' IPv6 gateway on the bridge: ``fe80::1/64``, usable at once (no DAD; the
    bridge's own link-local address the kernel made stays, and is not ours)."""
    from fireroute.addressing import GATEWAY6

    return Addr(br, f"{GATEWAY6}/64", nodad=True)


def route6(vm: Vm) -> list[Obj]:
    """A bridge guest's /64, routed onto its bridge (the VM's: it goes with the VM)."""
    if vm.net6 is None:
        return []
    br = str(vm.options.bridge)
    words = f'route {vm.net6} to bridge "{br}"'
    return [Route(str(vm.net6), None, br, words, vm.tag, vm.name)]
