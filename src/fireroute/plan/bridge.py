"""Bridge mode: a tap enslaved to a bridge (the guide's "Advanced: Bridge-based routing").

A bridge fireroute creates carries the owner tag ``fireroute:<state id>:bridge:<name>`` and
goes with the last VM on it (and only when no other link is attached to it); an existing
bridge is adopted: never re-addressed, never removed. Its objects are want/bridge.py's, its
steps the compiler's (plan/compiler.py).

Anti-spoofing on the bridge's ports: a table of the ``bridge`` family (same name as the NAT
table) checks every frame a guest's tap brings into the bridge: its source MAC, and for a
guest with a known address (not DHCP) its IPv4 and ARP sender addresses. Per-VM data lives in
sets, so the rules are constant.
"""

from __future__ import annotations

from fireroute import owner
from fireroute.want import bridge as want
from fireroute.want import nft as nft_want
from fireroute.want.tables import FILTER_HEADER, FILTER_RULES

BRIDGE_TAG = owner.BRIDGE
bridge_alias = want.alias
FAMILY = "bridge"
FILTER_SETS = nft_want.FILTER_SETS


def filter_chains() -> dict[str, tuple[str, list[str]]]:
    return {"prerouting": (FILTER_HEADER, list(FILTER_RULES))}
