"""What gc keeps of a lease's: its elements in the shared NAT table and its iptables rules, as
text (plan/nft.py's sweep and the tagged rules compare them so)."""

from __future__ import annotations

from fireroute.model import Vm
from fireroute.want import iptables as wanted_ipt
from fireroute.want import nft as nft_want


def expected_elements(vm: Vm) -> dict[str, list[str]]:
    """The set elements a VM should have in the shared NAT table, as nft text: its own, and
    a masquerading bridge guest's shared (bridge . uplink) egress element."""
    return nft_want.by_set(nft_want.nat_elements(vm))


def ipt_want(vm: Vm) -> set[str]:
    """The iptables rules (as iptables-nft-save prints them, quotes left out) a VM needs."""
    return {r.saved for r in wanted_ipt.rules(vm)}
