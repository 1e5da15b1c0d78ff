"""The ``ip6`` NAT table (issue 24, docs/ipv6-plan.md 1.4, 1.5): the IPv4 table's layout
(want/tables.py, want/nft.py) carried over by a small explicit translation, plus the rules only
IPv6 has. Pure data; nothing renders it yet (a VM without IPv6 sees no change).

A guest's key in ``vms`` and ``masq`` is its /64's prefix address (``fd3c:9a1e:52b0:1::``), so
every rule matching a guest's source masks it to its /64 (``ip6 saddr & MASK64``): one hash
lookup, whatever address in its /64 the guest (or SLAAC) chose. Every v4 rule is translated,
or is on :data:`V4_ONLY` with the reason; the unit test holds the two lists to ``RULES``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from fireroute.want.nft import MAPS, SETS
from fireroute.want.objects import Obj
from fireroute.want.tables import (
    ALL_PARTS,
    CHAINS,
    HEADERS,
    JUMP,
    JUMP_RULE,
    METADATA,
    OPTIONAL,
    RULES,
    NftChain,
    NftSet,
    parts_of,
    shared_table,
)

FAMILY = "ip6"
MASK64 = "ffff:ffff:ffff:ffff::"
"""A guest's /64: the mask its source is looked up with (``vms``, ``masq``)"""
METADATA6 = "fd00:ec2::254"
"""The metadata address of IPv6 clouds (the image of 169.254.169.254)"""
LINK_LOCAL = "fe80::/10"
GUEST64 = ("vms", "masq")
"""The sets keyed by a guest's /64 (its prefix address): the rules mask the source"""

PHRASES = (
    ("dnat ip to ", "dnat ip6 to "),
    (f"ip daddr != {METADATA} ", f"ip6 daddr != {METADATA6} "),
    (f"ip daddr {METADATA} ", f"ip6 daddr {METADATA6} "),
    # 127.0.0.0/8 is IPv4's loopback network; IPv6 has the one address
    ("ip daddr != 127.0.0.0/8 ", "ip6 daddr != ::1 "),
    ("ip daddr 127.0.0.0/8 ", "ip6 daddr ::1 "),
    ("ip daddr ", "ip6 daddr "),
    ("ip saddr . oifname @masq ", f"ip6 saddr & {MASK64} . oifname @masq "),
    ("ip saddr @vms ", f"ip6 saddr & {MASK64} @vms "),
    ("ip saddr != @vms ", f"ip6 saddr & {MASK64} != @vms "),
    ("icmp type ", "icmpv6 type "),
    ("reject with icmp ", "reject with icmpv6 "),
)
"""v4 phrase -> its v6 image, replaced in this order; a source is rewritten only before a
lookup in a /64-keyed set (GUEST64): any other ``ip saddr`` is left for a decision"""

V4_ONLY = (
    # a connection to a port published on 127.0.0.1 leaves with the tap's address: IPv6 has
    # no route_localnet, a port on [::1] cannot be forwarded (plan F8) and is refused
    ("postrouting", "ip saddr 127.0.0.0/8 oifname @taps masquerade"),
)
"""The v4 rules with no image in the ip6 table, each with its reason"""
V4_ONLY_SETS: tuple[str, ...] = ()
V4_ONLY_CHAINS: tuple[str, ...] = ()
"""Sets and chains only V4_ONLY rules use"""

IMAGES = {
    # a guest reaches the host from its link-local address (its gateway is one): such a
    # source is its own link's, never another guest's, and is never forwarded
    ("guest_in", "iifname . ip saddr != @vms counter drop"): (
        f"ip6 saddr != {LINK_LOCAL} iifname . ip6 saddr & {MASK64} != @vms counter drop"
    ),
}
"""The v4 rules whose image is not the phrases' (the reason beside each)"""

# -- bridge guests (docs/ipv6.md, bridge) -------------------------------------------------------
# A bridge guest with IPv6 has a /64 of its own routed onto the bridge; the bridge table lets it
# send from that /64 only (want/tables.py FILTER_RULES), so at the IP layer (where its packets
# arrive on the bridge) (bridge, source /64) is its identity, as (bridge, address) is in IPv4.
BRIDGE_PHRASES = (
    ("iifname . ip saddr @bridged ", f"iifname . ip6 saddr & {MASK64} @bridged "),
    ("ip saddr != @bridged_metadata ", f"ip6 saddr & {MASK64} != @bridged_metadata "),
    ("ip saddr . meta l4proto ", f"ip6 saddr & {MASK64} . meta l4proto "),
)
"""The bridge guests' v4 phrases -> their v6 images (before PHRASES)"""
BRIDGE_INPUT6 = (
    # a bridge guest's neighbour discovery from its /64 (untracked: the image of the untracked
    # drop would eat it); the RA guard is the bridge table's, on every port
    f"iifname . ip6 saddr & {MASK64} @bridged icmpv6 type "
    "{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept",
)

INPUT6 = (
    # the RA guard: a guest is no router (router advertisements, redirects, renumbering), nor
    # a DHCPv6 server; both before the untracked drop, to be counted here
    "iifname @taps icmpv6 type { nd-router-advert, nd-redirect, router-renumbering } counter drop",
    "iifname @taps udp sport 547 counter drop",
    # the guest's neighbour discovery (conntrack leaves ND untracked: the next rule would drop
    # it) from its own link only (hop limit 255: never forwarded)
    "iifname @taps icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } "
    "ip6 hoplimit 255 accept",
)
"""The rules only IPv6 has, first in ``input`` (plan 1.5). Nothing new reaches a guest
through ``forward``: the image of ``oifname @taps counter drop`` ends that chain as in v4."""
ONLY6 = {"input": INPUT6}

# -- blocks smaller than a /64 (--prefix6, docs/ipv6.md proxy NDP) ------------------------------
# A VM of a global pool in /N blocks (N > 64) shares its /64 with its neighbours, so the /64
# lookup of ``vms`` (keyed by the /64 that holds its block) cannot tell them apart: its tap is
# in ``taps128`` too, and from such a tap only the exact (tap, address) of ``vms128`` passes.
# A part of its own (SUB64): a table without such a VM is declared as before.
SUB64 = "sub64"
SUB64_SETS = {"taps128": "ifname", "vms128": "ifname . ipv6_addr"}
SUB64_RULES = {
    ("forward", f"iifname @taps iifname . ip6 saddr & {MASK64} != @vms counter drop"): (
        "iifname @taps128 iifname . ip6 saddr != @vms128 counter drop"
    ),
    # a published port's hairpin accept below looks the source up by its /64, which a sub-/64
    # neighbour shares: towards a sub-/64 guest only its own exact address is its hairpin
    ("forward", "ct status dnat iifname != @taps accept"): (
        "ct status dnat oifname @taps128 oifname . ip6 saddr != @vms128 counter drop"
    ),
    ("guest_in", IMAGES[("guest_in", "iifname . ip saddr != @vms counter drop")]): (
        f"ip6 saddr != {LINK_LOCAL} iifname @taps128 iifname . ip6 saddr != @vms128 counter drop"
    ),
}
"""rule after which -> the exact source check of a sub-/64 guest"""


def parts6_of(names: Iterable[str]) -> frozenset[str]:
    """The parts of an ip6 table the sets, maps or chains ``names`` belong to: want/tables.py
    ``parts_of``, and SUB64 for its sets."""
    names = set(names)
    return parts_of(names) | ({SUB64} if names & SUB64_SETS.keys() else frozenset())


V4_WORDS = ("ip", "icmp", "ipv4", "igmp", "arp")
"""Words that mean IPv4 in a rule (as do a dotted address, and a V4_ONLY set or chain)"""


class Untranslated(ValueError):
    """A v4 rule the phrases leave with an IPv4 word: its image (IMAGES) or its place on
    V4_ONLY is to be decided."""


def _v4_word(word: str) -> bool:
    parts = word.split("/")[0].split(".")
    dotted = len(parts) == 4 and all(p.isdigit() for p in parts)
    v4_only = word.removeprefix("@") in (*V4_ONLY_SETS, *V4_ONLY_CHAINS)
    return word in V4_WORDS or dotted or v4_only


def image(chain: str, rule: str) -> str:
    """A v4 rule's image in the ip6 table (raises :class:`Untranslated` when no phrase
    makes it IPv6's)."""
    if (chain, rule) in IMAGES:
        return IMAGES[(chain, rule)]
    text = rule + " "
    for v4, v6 in (*BRIDGE_PHRASES, *PHRASES):
        text = text.replace(v4, v6)
    left = [w for w in text.split() if _v4_word(w)]
    if left:
        raise Untranslated(f"{chain}: {rule!r} keeps {' '.join(left)} (decide its image)")
    return text.rstrip()


def type6(kind: str) -> str:
    """A set's or map's type in the ip6 table."""
    return kind.replace("ipv4_addr", "ipv6_addr")


SETS6 = {n: type6(k) for n, k in SETS.items() if n not in V4_ONLY_SETS} | SUB64_SETS
MAPS6 = {n: type6(k) for n, k in MAPS.items()}
CHAINS6 = tuple(c for c in CHAINS if c not in V4_ONLY_CHAINS)
HEADERS6 = {c: HEADERS[c] for c in CHAINS6}
RULES6 = tuple(
    [(c, r) for c in ONLY6 for r in ONLY6[c]]
    + [("input", r) for r in BRIDGE_INPUT6]
    + [(c, image(c, r)) for c, r in RULES if (c, r) not in V4_ONLY]
)
"""The ip6 table's rules, by chain in order (``input`` starts with INPUT6), written as
``nft list`` prints them"""
JUMP_RULE6 = image("forward", JUMP_RULE)


def nat6_layout(name: str, parts: frozenset[str] = ALL_PARTS) -> list[Obj]:
    """The ip6 NAT table ``name`` holding ``parts`` (want/tables.py PARTS: the same names)
    with its sets, maps and chains, in declaration order: nat_layout's objects, family
    ``ip6``."""
    t = shared_table(FAMILY, name)
    sets, chains = _layout6(parts)
    return [
        t,
        *(NftSet(t, n, kind, is_map) for n, kind, is_map in sets),
        *(NftChain(t, c, header, rules) for c, header, rules in chains),
    ]


@cache
def _layout6(
    parts: frozenset[str],
) -> tuple[tuple[tuple[str, str, bool], ...], tuple[tuple[str, str, tuple[str, ...]], ...]]:
    """The sets and maps (name, type, is a map) and chains (name, header, rules) of an ip6
    table holding ``parts`` (once per ``parts``)."""

    def held(n: str) -> bool:
        if n in SUB64_SETS:
            return SUB64 in parts
        return OPTIONAL.get(n, "") in parts or n not in OPTIONAL

    sets = tuple((n, k, False) for n, k in SETS6.items() if held(n))
    sets += tuple((n, k, True) for n, k in MAPS6.items() if held(n))
    skip = () if JUMP in parts else (JUMP_RULE6,)
    sub64 = SUB64_RULES if SUB64 in parts else {}

    def rules(c: str) -> tuple[str, ...]:
        out: list[str] = []
        for ch, r in RULES6:
            if ch == c and r not in skip:
                out += [r, *([sub64[(c, r)]] if (c, r) in sub64 else [])]
        return tuple(out)

    chains = tuple((c, HEADERS6[c], rules(c)) for c in CHAINS6 if held(c))
    return sets, chains
