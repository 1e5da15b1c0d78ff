"""The ip6 NAT table's layout (want/tables6.py): every IPv4 rule has its image or a reason on
V4_ONLY, the translation of a few rules literally, the sets' types, and the lazy parts as in
the ip table."""

import importlib.util
from types import ModuleType

import pytest

from fireroute.want import tables, tables6
from fireroute.want.nft import MAPS, SETS, SHARDS
from fireroute.want.tables import (
    ALL_PARTS,
    CHAINS,
    HEADERS,
    JUMP,
    JUMP_RULE,
    PUBLISHING,
    RULES,
    NftChain,
    NftSet,
    NftTable,
    nat_layout,
)
from fireroute.want.tables6 import (
    BRIDGE_INPUT6,
    IMAGES,
    INPUT6,
    JUMP_RULE6,
    MAPS6,
    MASK64,
    RULES6,
    SETS6,
    V4_ONLY,
    V4_ONLY_CHAINS,
    V4_ONLY_SETS,
    Untranslated,
    image,
    nat6_layout,
)

M = MASK64


def test_every_v4_rule_has_its_image_or_a_reason_on_v4_only():
    """The parity test. A v4 rule whose text keeps an IPv4 word once the phrases are applied
    (``ip``, ``icmp``, ``ipv4``, a dotted address, a bridge guest's set) fails here until its
    image (IMAGES, PHRASES) or its place on V4_ONLY is decided; a rule of family-blind words
    only (``iifname @taps counter drop``) is its own image."""
    undecided = []
    for chain, rule in RULES:
        if (chain, rule) in V4_ONLY:
            continue
        try:
            image(chain, rule)
        except Untranslated as e:
            undecided.append(str(e))
    assert undecided == []
    # no stale decision: each names a rule of RULES, and a rule is decided one way only
    assert set(V4_ONLY) <= set(RULES)
    assert len(set(V4_ONLY)) == len(V4_ONLY)
    assert set(IMAGES) <= set(RULES) - set(V4_ONLY)
    assert len(RULES6) == len(RULES) - len(V4_ONLY) + len(INPUT6) + len(BRIDGE_INPUT6)


def derived() -> ModuleType:
    """want/tables6.py loaded afresh, from today's want/tables.py (the loaded one untouched)."""
    spec = importlib.util.find_spec("fireroute.want.tables6")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adding_a_v4_rule_without_deciding_its_image_fails(monkeypatch: pytest.MonkeyPatch):
    """The table is derived when the module loads: a new v4 rule keeping an IPv4 word stops
    it with the rule named; a new rule of family-blind words is carried over as it is."""
    assert derived().RULES6 == RULES6
    monkeypatch.setattr(tables, "RULES", (*RULES, ("forward", "iifname . ip saddr @new accept")))
    with pytest.raises(ValueError, match=r"forward: .*@new accept.* keeps ip \(decide"):
        derived()
    blind = ("forward", "iifname @new counter drop")
    monkeypatch.setattr(tables, "RULES", (*RULES, blind))
    got = derived().RULES6
    assert got == (*RULES6, blind)  # (appended to RULES: last)


@pytest.mark.parametrize(
    "rule",
    [
        "iifname . ip saddr @newset accept",  # a source looked up in a set not keyed by /64
        "ip saddr 10.0.0.0/8 accept",
        "meta nfproto ipv4 accept",
        "ip protocol icmp accept",
        "arp operation request accept",
    ],
)
def test_a_rule_with_an_ipv4_word_left_is_refused_a_silent_image(rule: str):
    with pytest.raises(Untranslated, match="decide its image"):
        image("forward", rule)
    assert image("forward", "iifname @taps counter drop") == "iifname @taps counter drop"


LITERAL = [
    (
        "postrouting",
        "ip saddr . oifname @masq counter masquerade",
        f"ip6 saddr & {M} . oifname @masq counter masquerade",
    ),
    (
        "forward",
        "iifname @taps iifname . ip saddr != @vms counter drop",
        f"iifname @taps iifname . ip6 saddr & {M} != @vms counter drop",
    ),
    (
        "forward",
        "iifname @taps ip daddr 169.254.169.254 iifname != @metadata counter drop",
        "iifname @taps ip6 daddr fd00:ec2::254 iifname != @metadata counter drop",
    ),
    (
        "forward",
        "ct direction original ip daddr != 169.254.169.254 oifname != @peers "
        "iifname vmap @out_jump",
        "ct direction original ip6 daddr != fd00:ec2::254 oifname != @peers iifname vmap @out_jump",
    ),
    ("guest_in", "icmp type echo-request accept", "icmpv6 type echo-request accept"),
    (
        "out_reject",
        "counter reject with icmp admin-prohibited",
        "counter reject with icmpv6 admin-prohibited",
    ),
    (
        "pub_pre",
        "fib daddr type local ip daddr != 127.0.0.0/8 dnat ip to meta l4proto . th dport "
        "map @pub_any",
        "fib daddr type local ip6 daddr != ::1 dnat ip6 to meta l4proto . th dport map @pub_any",
    ),
    (
        "out_7",
        "iifname . ip daddr @out_deny_7 iifname . ip daddr != @out_allow_7 jump out_reject",
        "iifname . ip6 daddr @out_deny_7 iifname . ip6 daddr != @out_allow_7 jump out_reject",
    ),
    # a guest's link-local source (its gateway is fe80::1) is its own link's: not dropped
    (
        "guest_in",
        "iifname . ip saddr != @vms counter drop",
        f"ip6 saddr != fe80::/10 iifname . ip6 saddr & {M} != @vms counter drop",
    ),
]


@pytest.mark.parametrize(("chain", "v4", "v6"), LITERAL, ids=lambda x: str(x)[:30])
def test_the_translation_of_a_few_rules(chain: str, v4: str, v6: str):
    assert (chain, v4) in RULES  # (today's v4 rules)
    assert image(chain, v4) == v6
    assert (chain, v6) in RULES6


def test_the_egress_policy_jump_is_its_image():
    assert JUMP_RULE6 == image("forward", JUMP_RULE) == LITERAL[3][2]


def chain(name: str) -> list[str]:
    return [r for c, r in RULES6 if c == name]


def test_input_starts_with_the_ra_guard_then_neighbour_discovery():
    rules = chain("input")
    assert rules[:3] == [
        "iifname @taps icmpv6 type { nd-router-advert, nd-redirect, router-renumbering } "
        "counter drop",
        "iifname @taps udp sport 547 counter drop",
        "iifname @taps icmpv6 type { nd-router-solicit, nd-neighbor-solicit, "
        "nd-neighbor-advert } ip6 hoplimit 255 accept",
    ]
    # a bridge guest's ND (from its own /64; the RA guard is the bridge table's, every port)
    assert rules[3] == BRIDGE_INPUT6[0] and "@bridged icmpv6 type { nd-router-solicit" in rules[3]
    # conntrack leaves ND untracked: its accept comes before the untracked drop
    assert rules[4] == "ct state invalid,untracked iifname @taps counter drop"
    assert rules[-2:] == [
        "iifname @taps jump guest_in",
        f"iifname . ip6 saddr & {M} @bridged jump bridge_in",
    ]


def test_nothing_new_reaches_a_guest_through_forward():
    rules = chain("forward")
    assert rules[-2:] == ["iifname @taps counter drop", "oifname @taps counter drop"]
    accepts = [r for r in rules if r.endswith("accept") and "@taps" not in r]
    # established replies, published ports, peers and a guest's own egress only
    assert accepts == [
        "ct state established,related accept",
        f"ct status dnat oifname . ip6 saddr & {M} @vms accept",
        "iifname @peers oifname @peers accept",
        "iifname . oifname @egress counter accept",
    ]


def test_no_ipv4_word_in_the_ip6_table():
    for c, r in RULES6:
        assert not any(tables6._v4_word(w) for w in r.split()), (c, r)
        assert "ip saddr" not in r and "ip daddr" not in r
    for kind in (*SETS6.values(), *MAPS6.values()):
        assert "ipv4_addr" not in kind


def test_the_sets_types():
    assert SETS6["vms"] == "ifname . ipv6_addr"  # tap . the guest's /64 prefix address
    assert SETS6["masq"] == "ipv6_addr . ifname"
    assert SETS6["taps"] == "ifname"
    assert SETS6["acct_tx"] == SETS6["acct_rx"] == "ifname; counter"
    assert SETS6["host_ports"] == "ifname . inet_proto . inet_service"
    for k in range(SHARDS):
        for kind in ("deny", "allow"):
            assert SETS6[f"out_{kind}_{k}"] == "ifname . ipv6_addr; flags interval"
    assert MAPS6 == {
        "pub_any": "inet_proto . inet_service : ipv6_addr . inet_service",
        "pub_addr": "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
        "out_jump": "ifname : verdict",
    }
    # every v4 set is carried over (same name, same order) or is a bridge guest's; the
    # sub-/64 guests' two sets are IPv6's only, last
    carried = [n for n in SETS6 if n not in tables6.SUB64_SETS]
    assert list(SETS6)[len(carried) :] == list(tables6.SUB64_SETS)
    assert [*carried, *V4_ONLY_SETS] == [n for n in SETS if n in SETS6] + list(V4_ONLY_SETS)
    assert set(carried) | set(V4_ONLY_SETS) == set(SETS) and list(MAPS6) == list(MAPS)


def test_every_set_and_chain_a_rule_names_is_in_the_table():
    names = set(SETS6) | set(MAPS6)
    chains = {c for c, _ in RULES6}
    for c, r in RULES6:
        for w in r.split():
            if w.startswith("@"):
                assert w[1:] in names, (c, r)
        if " jump " in f" {r}":
            assert r.split("jump ")[1].split()[0] in chains, (c, r)
    # the v4-only sets and chain are used by V4_ONLY rules only
    for c, r in RULES:
        if c in V4_ONLY_CHAINS or any(f"@{s}" in r.split() for s in V4_ONLY_SETS):
            assert (c, r) in V4_ONLY, (c, r)


PARTS_CASES = [
    frozenset(),
    frozenset({JUMP, "out_3"}),
    frozenset({PUBLISHING}),
    ALL_PARTS,
]


@pytest.mark.parametrize("parts", PARTS_CASES, ids=lambda p: ",".join(sorted(p)) or "lean")
def test_parts_as_in_the_ip_table(parts: frozenset[str]):
    """The same objects as nat_layout's, family ip6, with the same names (less the bridge
    guests'), the same headers, and the parts' sets and chains only when held."""
    v4, v6 = nat_layout("fc", parts), nat6_layout("fc", parts)
    table = v6[0]
    assert isinstance(table, NftTable)
    got = (table.family, table.name, table.owner, table.vm, table.ns)
    assert got == ("ip6", "fc", "fireroute", None, None)
    assert table.what() == 'set up nftables table "ip6 fc"'
    assert all(o.family == "ip6" and o.table == "fc" for o in v6[1:])  # type: ignore[attr-defined]
    kinds = [type(o) for o in v6]
    assert kinds == sorted(kinds, key=[NftTable, NftSet, NftChain].index)

    def names(objs: list, cls: type) -> list[str]:
        return [o.name for o in objs if isinstance(o, cls)]

    dropped = set(V4_ONLY_SETS) | set(V4_ONLY_CHAINS)
    assert names(v6, NftSet) == [n for n in names(v4, NftSet) if n not in dropped]
    assert names(v6, NftChain) == [n for n in names(v4, NftChain) if n not in dropped]
    for s in v6[1:]:
        if isinstance(s, NftSet):
            assert (s.type, s.is_map) == ((MAPS6 if s.is_map else SETS6)[s.name], s.is_map)
    chains = {c.name: c for c in v6 if isinstance(c, NftChain)}
    for c in chains.values():
        assert c.header == HEADERS[c.name]
    forward = chains["forward"].rules
    assert (JUMP_RULE6 in forward) is (JUMP in parts)
    assert forward == tuple(r for r in chain("forward") if JUMP in parts or r != JUMP_RULE6)


def test_a_lean_table_holds_no_part_and_a_whole_one_every_chain():
    lean = nat6_layout("fc", frozenset())
    assert len(lean) == 1 + 12 + 8  # table, sets, chains: no part (as the v4 lean one)
    whole = nat6_layout("fc")
    chains = [o.name for o in whole if isinstance(o, NftChain)]
    assert chains == [c for c in CHAINS if c not in V4_ONLY_CHAINS]
    assert nat6_layout("fc") is not whole and nat6_layout("fc") == whole  # fresh objects
