"""nftables tables, sets and chains fireroute wants (a clone namespace's NAT table, the shared
NAT and bridge tables with their layout), printed as the script that declares them: the text
``nft list`` prints back, so a chain compares as listed."""

from __future__ import annotations

from fireroute.want.nft import FILTER_SETS, MAPS, SETS, SHARDS
from fireroute.want.objects import Obj

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

TABLE_COMMENT = "fireroute"
CHAINS = (
    "postrouting",
    "forward",
    "input",
    "guest_in",
    "bridge_in",
    "acct_in",
    "acct_out",
    "out_reject",
    "pub_pre",
    "pub_out",
    "unmasked",
    *(f"out_{k}" for k in range(SHARDS)),
)
METADATA = "169.254.169.254"
HEADERS = {
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "forward": "type filter hook forward priority filter; policy accept;",
    "input": "type filter hook input priority filter; policy accept;",
    "guest_in": "",
    "bridge_in": "",
    # every packet from a guest's device, before anything drops it; every packet to it, once
    # routed (forwarded or from the host itself)
    "acct_in": "type filter hook prerouting priority mangle; policy accept;",
    "acct_out": "type filter hook postrouting priority 150; policy accept;",
    "out_reject": "",
    # published ports: what reaches a host address from outside, and from the host itself
    "pub_pre": "type nat hook prerouting priority dstnat; policy accept;",
    "pub_out": "type nat hook output priority -100; policy accept;",
    # after source NAT (priority srcnat, 100) has rewritten what it was going to
    "unmasked": "type filter hook postrouting priority 200; policy accept;",
    **{f"out_{k}": "" for k in range(SHARDS)},
}
"""Each chain's type, hook and policy, as ``nft list`` prints them"""
PUBLISH = (
    "fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub_addr",
    # a port published without an address: every host address but the loopback's
    "fib daddr type local ip daddr != 127.0.0.0/8 dnat ip to meta l4proto . th dport map @pub_any",
)
RULES = (
    ("postrouting", "ip saddr . oifname @masq counter masquerade"),
    # a guest reaching its own published port (hairpin) answers the host, not itself; a
    # connection to a 127.0.0.1 port leaves with the tap's address, not the loopback's
    ("postrouting", "ct status dnat oifname . ip saddr @vms masquerade"),
    ("postrouting", "ip saddr 127.0.0.0/8 oifname @taps masquerade"),
    # a packet conntrack could not track (invalid: SYN+FIN, no TCP flags, a bad checksum, a
    # TCP segment outside the window; or untracked) has no connection, so neither the policy
    # rule below (ct direction) nor masquerade would see it: it would leave the uplink with
    # the guest's own address. Dropped first, from taps and from known bridge guests (the
    # state compared before the set lookup: most packets are tracked and stop there)
    ("forward", "ct state invalid,untracked iifname @taps counter drop"),
    ("forward", "ct state invalid,untracked iifname . ip saddr @bridged counter drop"),
    # a guest sends from its own address only, checked before anything accepts: conntrack
    # knows no interface, so a neighbour forging a guest's address and the ports of one of its
    # connections would otherwise pass as that connection's packet (and a forged packet must
    # not draw the policy's reject towards the address it forged)
    ("forward", "iifname @taps iifname . ip saddr != @vms counter drop"),
    # before the established accept: a policy change cuts connections the guest opened that
    # it now forbids; replies (connections others opened to it), the metadata address and
    # peers keep their own rules
    (
        "forward",
        f"ct direction original ip daddr != {METADATA} oifname != @peers iifname vmap @out_jump",
    ),
    ("forward", "ct state established,related accept"),
    ("forward", f"iifname @taps ip daddr {METADATA} iifname != @metadata counter drop"),
    (
        "forward",
        f"iifname . ip saddr @bridged ip daddr {METADATA} ip saddr != @bridged_metadata "
        "counter drop",
    ),
    # published ports: forwarded to a guest on purpose, from anywhere but another guest
    # (which isolation decides on), or a guest to its own port
    ("forward", "ct status dnat iifname != @taps accept"),
    ("forward", "ct status dnat oifname . ip saddr @vms accept"),
    ("forward", "iifname @peers oifname @peers accept"),
    ("forward", "iifname . oifname @egress counter accept"),
    ("forward", "iifname @taps counter drop"),
    ("forward", "oifname @taps counter drop"),
    ("input", "ct state invalid,untracked iifname @taps counter drop"),  # (as in forward)
    ("input", "ct state invalid,untracked iifname . ip saddr @bridged counter drop"),
    # route_localnet on a tap with a 127.0.0.1 port would let its guest reach the host's
    # loopback: a guest's own packet to 127.0.0.0/8 never is delivered
    ("input", "iifname @taps ip daddr 127.0.0.0/8 ct direction original counter drop"),
    ("input", "iifname @taps jump guest_in"),
    ("input", "iifname . ip saddr @bridged jump bridge_in"),
    ("guest_in", "iifname . ip saddr != @vms counter drop"),  # (first: as in forward)
    ("guest_in", "ct state established,related accept"),
    ("guest_in", "icmp type echo-request accept"),
    ("guest_in", "iifname . meta l4proto . th dport @host_ports accept"),
    ("guest_in", "counter drop"),
    ("bridge_in", "ct state established,related accept"),
    ("bridge_in", "icmp type echo-request accept"),
    ("bridge_in", "ip saddr . meta l4proto . th dport @bridged_ports accept"),
    ("bridge_in", "counter drop"),
    ("acct_in", "iifname @acct_tx"),
    ("acct_out", "oifname @acct_rx"),
    # a forbidden destination fails fast in the guest: a TCP reset, an ICMP error otherwise
    ("out_reject", "reject with tcp reset"),
    ("out_reject", "counter reject with icmp admin-prohibited"),
    *(("pub_pre", r) for r in PUBLISH),
    *(("pub_out", r) for r in PUBLISH),
    # the second guard: a packet that should have been masqueraded (its source and way out
    # are a masq element) but still carries the guest's address once source NAT is done,
    # whatever let it through, never leaves; the replies of a connection that came in (to a
    # masquerading bridge guest) are not masqueraded and pass (a packet conntrack cannot track
    # has no direction, so it meets the drop)
    ("unmasked", "ct direction reply accept"),
    ("unmasked", "ip saddr . oifname @masq counter drop"),
    *(
        (
            f"out_{k}",
            f"iifname . ip daddr @out_deny_{k} iifname . ip daddr != @out_allow_{k} "
            "jump out_reject",
        )
        for k in range(SHARDS)
    ),
)
"""The table's rules, constant whatever the VM count, written as ``nft list`` prints them
(less the counters' values): ``check`` compares the kernel's listing with exactly these."""


MASK64 = "ffff:ffff:ffff:ffff::"
"""A guest's /64: the mask its IPv6 source is looked up with"""
LINK_LOCAL6 = "fe80::/10"
GATEWAY_RAW = "0xfe800000000000000000000000000001"  # fe80::1 as a 128-bit raw field
LINK_LOCAL_RAW = "0xfe80000000000000"  # fe80::/64's first 64 bits
FILTER_HEADER = "type filter hook prerouting priority filter; policy accept;"
FILTER_RULES = (
    "iifname @ports iifname . ether saddr != @macs counter drop",
    "iifname @ports iifname . arp saddr ether != @macs counter drop",
    "iifname @ipports iifname . arp saddr ip != @addrs counter drop",
    "iifname @ipports iifname . ip saddr != @addrs counter drop",
    # the RA guard, on every port (docs/ipv6-plan.md 7.5): a guest is no router (router
    # advertisements, redirects, renumbering) nor a DHCPv6 server to the others on the bridge
    "iifname @ports icmpv6 type { nd-router-advert, nd-redirect, router-renumbering } counter drop",
    "iifname @ports udp sport 547 counter drop",
    # IPv6 only from a guest that has it (a v4-only guest would reach the host over the
    # bridge's link-local address, around the ip table's host protection); from one that has
    # it: ICMPv6 alone (neighbour discovery, ping) from its link-local (or DAD's unspecified)
    # address, anything else from its own /64 only
    "ether type ip6 iifname @ports iifname != @ports6 counter drop",
    f"ip6 saddr {{ ::, {LINK_LOCAL6} }} meta l4proto != ipv6-icmp iifname @ports6 counter drop",
    f"ip6 saddr != {{ ::, {LINK_LOCAL6} }} iifname . ip6 saddr & {MASK64} != @addrs6 "
    "iifname @ports6 counter drop",
    # neighbour advertisements (docs/ipv6.md, bridge): a guest is not the gateway (it neither
    # sends from fe80::1 nor names it), and names only its own /64 or a link-local address
    # (the NA's target: ICMPv6 offset 8, its /64 the first 64 bits)
    "iifname @ports6 ip6 saddr fe80::1 counter drop",
    f"iifname @ports6 icmpv6 type nd-neighbor-advert @th,64,128 {GATEWAY_RAW} counter drop",
    f"iifname @ports6 icmpv6 type nd-neighbor-advert @th,64,64 != {LINK_LOCAL_RAW} "
    "iifname . @th,64,64 != @targets6 counter drop",
)
"""Written as ``nft list`` prints them (it leaves out the implied ``ether type``)"""
FILTER_OUT_HEADER = "type filter hook output priority filter; policy accept;"
FILTER_OUT_RULES = (
    # the host routes between bridge guests' /64s: a redirect would send one guest to the other
    # directly, its replies still through the host, which then finds them out of any connection
    # (invalid: dropped); so every packet between them crosses the host both ways
    "oifname @ports6 icmpv6 type nd-redirect counter drop",
)
"""The bridge table's chain of the host's own frames out of a port"""


POLICY_SETS = (
    "out_jump",
    *(f"out_{kind}_{k}" for k in range(SHARDS) for kind in ("deny", "allow")),
)
PORT_MAPS = ("pub_any", "pub_addr")
JUMP, PUBLISHING = "jump", "publish"
PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    JUMP: (("out_jump",), ("out_reject",)),
    **{f"out_{k}": ((f"out_deny_{k}", f"out_allow_{k}"), (f"out_{k}",)) for k in range(SHARDS)},
    PUBLISHING: (PORT_MAPS, ("pub_pre", "pub_out")),
}
"""What a table declares only once a VM in it needs it (issue 23 step 22: a lone VM's table
holds 20 sets and chains instead of 218, and is made and deleted that much faster): part ->
(its sets and maps, its chains). ``jump`` (a VM with an egress policy) also brings the
forward rule on @out_jump; ``out_K``, the pair of policy sets of the taps of shard K;
``publish``, published ports. A part comes with ``add`` (idempotent) beside the first VM that
needs it, and stays until the table goes; ``check`` wants a part some VM needs, or one the
table holds."""
ALL_PARTS = frozenset(PARTS)
JUMP_RULE = next(r for c, r in RULES if c == "forward" and "@out_jump" in r)
OPTIONAL = {n: part for part, (sets, chains) in PARTS.items() for n in (*sets, *chains)}


def parts_of(names: Iterable[str]) -> frozenset[str]:
    """The parts the sets, maps or chains ``names`` belong to (those of no part left out)."""
    return frozenset(OPTIONAL[n] for n in names if n in OPTIONAL)


class Part(Obj):
    """A set or a chain of a table: in the table's namespace, owned as the table is."""

    __slots__ = ("family", "table", "name")

    def __init__(self, table: NftTable, name: str) -> None:
        super().__init__(table.ns, table.owner, table.vm)
        self.family = table.family
        self.table = table.name
        self.name = name

    @property
    def key(self) -> tuple:
        return (self.ns, self.family, self.table, self.name)


class NftChain(Part):
    """A base chain: ``header`` (type, hook, priority, policy) and its ``rules`` in order."""

    __slots__ = ("header", "rules")
    kind = "nft chain"

    def __init__(self, table: NftTable, name: str, header: str, rules: tuple[str, ...]) -> None:
        super().__init__(table, name)
        self.header = header
        self.rules = rules

    @property
    def attrs(self) -> tuple:
        return (self.header, self.rules)

    def block(self) -> str:
        """The chain inside its table's declaration."""
        rules = "".join(f"    {r}\n" for r in self.rules)
        return f"  chain {self.name} {{ {self.header}\n{rules}  }}\n"


class NftTable(Obj):
    """A table of ours (comment ``fireroute``); ``words`` is the action it is made for."""

    __slots__ = ("family", "name", "words")
    kind = "nft table"

    def __init__(
        self, family: str, name: str, words: str, owner: str, vm: str | None, ns: str | None
    ) -> None:
        super().__init__(ns, owner, vm)
        self.family = family
        self.name = name
        self.words = words

    @property
    def key(self) -> tuple:
        return (self.ns, self.family, self.name)

    def script(self, chains: list[NftChain]) -> str:
        """The script declaring the table with ``chains`` (this table's, in order)."""
        body = "".join(c.block() for c in chains if c.table == self.name)
        return f'table {self.family} {self.name} {{\n  comment "fireroute"\n{body}}}\n'

    def what(self, verb: str = "create") -> str:
        return self.words


def declared(type_text: str) -> str:
    """A set's key as declared: ``type …``, or ``typeof …`` (a key of raw payload fields)."""
    return type_text if type_text.startswith("typeof ") else f"type {type_text}"


class NftSet(Part):
    """A set (or, ``is_map``, a map) of a table: ``type`` as declared (``ifname . ipv4_addr;
    flags interval``, ``ifname : verdict``). Its elements go with it."""

    __slots__ = ("type", "is_map")
    kind = "nft set"

    def __init__(self, table: NftTable, name: str, type_text: str, is_map: bool = False) -> None:
        super().__init__(table, name)
        self.type = type_text
        self.is_map = is_map

    @property
    def attrs(self) -> tuple:
        return (self.type, self.is_map)

    def text(self, verb: str = "create") -> str:
        """The declaration inside its table's (``create``) or the line deleting it."""
        word = "map" if self.is_map else "set"
        if verb == "delete":
            return f"delete {word} {self.family} {self.table} {self.name}\n"
        return f"  {word} {self.name} {{ {declared(self.type)}; }}\n"

    def what(self, verb: str = "create") -> str:
        return f"{verb} set {self.name} of {self.family} {self.table}"


def shared_table(family: str, name: str) -> NftTable:
    """One of the tables every state file's VMs share (comment ``fireroute``, no VM's)."""
    words = f'set up nftables table "{name if family == "ip" else f"{family} {name}"}"'
    return NftTable(family, name, words, TABLE_COMMENT, None, None)


def nat_layout(name: str, parts: frozenset[str] = ALL_PARTS) -> list[Obj]:
    """The NAT table ``name`` holding ``parts`` (PARTS) with its sets, maps and chains, in
    declaration order."""
    t = shared_table("ip", name)
    sets, chains = _kept(parts)
    return [
        t,
        *(NftSet(t, n, kind, is_map) for n, kind, is_map in sets),
        *(NftChain(t, c, header, rules) for c, header, rules in chains),
    ]


_KEPT: dict[frozenset[str], tuple[list[tuple[str, str, bool]], list[tuple]]] = {}


def _kept(parts: frozenset[str]) -> tuple[list[tuple[str, str, bool]], list[tuple]]:
    """The sets and maps (name, type, is a map) and the chains (name, header, rules) of a NAT
    table holding ``parts`` (worked out once per ``parts``: up renders a table twice)."""
    got = _KEPT.get(parts)
    if got is None:

        def keep(n: str) -> bool:
            return n not in OPTIONAL or OPTIONAL[n] in parts

        sets = [(s, kind, False) for s, kind in SETS.items() if keep(s)]
        sets += [(m, kind, True) for m, kind in MAPS.items() if keep(m)]
        jump = JUMP in parts
        chains = [
            (c, HEADERS[c], tuple(r for ch, r in RULES if ch == c and (jump or r != JUMP_RULE)))
            for c in CHAINS
            if keep(c)
        ]
        got = _KEPT[parts] = (sets, chains)
    return got


def chains(parts: frozenset[str] = ALL_PARTS) -> dict[str, tuple[str, list[str]]]:
    """The chains of a NAT table holding ``parts``: name -> (header, rules), as read back."""
    return {c: (header, list(rules)) for c, header, rules in _kept(parts)[1]}


def declare(
    family: str, table: str, sets: list[tuple[str, str, bool]], chains: list[NftChain]
) -> str:
    """A table of ours declared with ``sets`` (name, type, is a map) and ``chains`` (flushed,
    their rules added): the same text for the NAT table and the bridge family's one."""
    body = "".join(f"  {'map' if m else 'set'} {n} {{ {declared(t)}; }}\n" for n, t, m in sets)
    body += "".join(
        f"  chain {c.name} {{ {c.header} }}\n" if c.header else f"  chain {c.name} {{ }}\n"
        for c in chains
    )
    text = f'table {family} {table} {{\n  comment "{TABLE_COMMENT}"\n{body}}}\n'
    text += "".join(f"flush chain {family} {table} {c.name}\n" for c in chains)
    return text + "".join(
        f"add rule {family} {table} {c.name} {r}\n" for c in chains for r in c.rules
    )


def skeleton(name: str, parts: frozenset[str] = ALL_PARTS) -> str:
    """The NAT table ``name`` holding ``parts`` declared whole, as its first VM declares it."""
    layout = nat_layout(name, parts)[1:]
    sets = [(o.name, o.type, o.is_map) for o in layout if isinstance(o, NftSet)]
    return declare("ip", name, sets, [o for o in layout if isinstance(o, NftChain)])


def filter_layout(name: str) -> list[Obj]:
    """The bridge family's table ``name`` with its sets and its one chain."""
    t = shared_table("bridge", name)
    sets: list[Obj] = [NftSet(t, s, kind) for s, kind in FILTER_SETS.items()]
    return [
        t,
        *sets,
        NftChain(t, "prerouting", FILTER_HEADER, FILTER_RULES),
        NftChain(t, "output", FILTER_OUT_HEADER, FILTER_OUT_RULES),
    ]
