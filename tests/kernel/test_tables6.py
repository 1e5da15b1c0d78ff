"""The ip6 NAT table of want/tables6.py on this kernel, in throwaway namespaces: its whole text
(every part, and none) is taken by ``nft -f`` and listed back as the layout says (the reader's
parsers read it as the ip table's), and with real packets through a router holding it, the
guest (a veth standing for its tap) leaves masqueraded from its own /64, not from another, its
router advertisement and DHCPv6 server reply meet their drops, its neighbour discovery and echo
to ``fe80::1`` are answered, and nothing new reaches it from outside while replies do. Nothing
outside the test's namespaces."""

from __future__ import annotations

import json

import pytest

from fireroute.kernel.read import parse_chains, parse_sets
from fireroute.want.tables import ALL_PARTS, declare, nat_layout
from fireroute.want.tables6 import INPUT6, MASK64, nat6_layout
from tests.conftest import needs_root_to, sh
from tests.kernel import test_v6_facts as facts
from tests.kernel.test_v6_facts import (
    FAR,
    FOREIGN,
    OWN,
    UPLINK,
    Netns,
    routed,
    udp_across,
    wait_for,
)

pytestmark = [pytest.mark.privileged, needs_root_to("create network namespaces")]

netns = facts.netns  # the fixture: namespaces made for one test, removed after it
TABLE = "frt6"
OWN64 = OWN.rsplit("::", 1)[0] + "::"  # the guest's /64 prefix address: its key in vms, masq
RA_GUARD, ND_ACCEPT = INPUT6[0], INPUT6[2]
UNTRACKED = "ct state invalid,untracked iifname @taps counter drop"
FOREIGN_DROP = f"iifname @taps iifname . ip6 saddr & {MASK64} != @vms counter drop"
DHCP6_SERVER = INPUT6[1]
TOWARDS_GUEST = "oifname @taps counter drop"
MASQ = f"ip6 saddr & {MASK64} . oifname @masq counter masquerade"
ELEMENTS = f"""
add element ip6 {TABLE} taps {{ "hg" }}
add element ip6 {TABLE} vms {{ "hg" . {OWN64} }}
add element ip6 {TABLE} masq {{ {OWN64} . "up0" }}
add element ip6 {TABLE} egress {{ "hg" . "up0" }}
add element ip6 {TABLE} acct_tx {{ "hg" }}
add element ip6 {TABLE} acct_rx {{ "hg" }}
"""
"""A guest on hg (the router's end of its link) leaving by up0, as up would add it"""

RA = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
# a router advertisement (the kernel fills the checksum): hop limit 64, router lifetime 1800 s
s.sendto(struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0),
         ("ff02::1", 0, 0, socket.if_nametoindex(sys.argv[1])))
"""
ECHO = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(1.0)
s.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x6f72, 1) + b"fireroute",
         ("fe80::1", 0, 0, socket.if_nametoindex(sys.argv[1])))
try:
    while True:
        data, addr = s.recvfrom(2048)
        if data[0] == 129 and data[4:6] == b"\x6f\x72":
            print("reply", addr[0]); break
except socket.timeout:
    print("none")
"""
DATAGRAM = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[2])))
s.sendto(b"x", ("fe80::1", 546, 0, socket.if_nametoindex(sys.argv[1])))
"""
UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1]))); print("ready", flush=True)
data, addr = s.recvfrom(2048); s.sendto(data, addr)
sys.stdin.readline()
"""
ASK = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(1.0)
s.bind((sys.argv[1], 0)); s.sendto(b"asked", (sys.argv[2], int(sys.argv[3])))
try:
    data, addr = s.recvfrom(2048); print(addr[0], data.decode())
except socket.timeout:
    print("none")
"""


def script(family: str, table: str, objs: list) -> str:
    """The declaration of a layout (nat_layout's or nat6_layout's objects) with its chains'
    rules, as the compiler declares a fresh table."""
    sets = [(o.name, o.type, o.is_map) for o in objs if o.kind == "nft set"]
    return declare(family, table, sets, [o for o in objs if o.kind == "nft chain"])


def listed(ns: str, family: str = "ip6", table: str = TABLE) -> str:
    return sh("ip", "netns", "exec", ns, "nft", "list", "table", family, table).stdout


@pytest.mark.parametrize("parts", [ALL_PARTS, frozenset()], ids=["all-parts", "lean"])
def test_the_whole_ip6_table_is_taken_and_listed_back(netns: Netns, parts: frozenset[str]):
    """Declared in one transaction beside the ip table of the same name (up writes both in
    one), the ip6 table lists back exactly its layout: each chain's header and rules (counter
    values left out) and each set's and map's type; the ip one is untouched."""
    ns = netns.add("decl")
    v4, v6 = nat_layout(TABLE, parts), nat6_layout(TABLE, parts)
    facts.nft(ns, script("ip", TABLE, v4) + script("ip6", TABLE, v6))
    text = listed(ns)
    assert parse_chains(text) == {
        o.name: (o.header, list(o.rules)) for o in v6 if o.kind == "nft chain"
    }
    assert parse_sets(text) == {o.name: (o.type, o.is_map) for o in v6 if o.kind == "nft set"}
    assert "ip saddr" not in text and "ipv4_addr" not in text
    v4_chains = parse_chains(listed(ns, "ip"))
    assert v4_chains == {o.name: (o.header, list(o.rules)) for o in v4 if o.kind == "nft chain"}


def counted(ns: str) -> dict[str, int]:
    """Packets counted by each rule of the table with a counter, by the rule's text (its
    counter's values left out; rules of the same text, as guest_in's and bridge_in's last,
    summed)."""
    out: dict[str, int] = {}
    for line in listed(ns).splitlines():
        rule = line.strip()
        if " packets " in rule:
            head, _, rest = rule.partition(" packets ")
            packets, _, tail = rest.partition(" bytes ")
            key = f"{head} {tail.split(' ', 1)[1]}"
            out[key] = out.get(key, 0) + int(packets)
    return out


def neighbour(n: Netns, ns: str, dev: str, addr: str) -> dict:
    entries = json.loads(n.ip(ns, "-6", "-j", "neigh", "show", "dev", dev).stdout)
    return next((e for e in entries if e["dst"] == addr), {})


def hg_mac(n: Netns, router: str) -> str:
    return json.loads(n.ip(router, "-j", "link", "show", "dev", "hg").stdout)[0]["address"]


def test_packets_through_a_router_holding_the_ip6_table(netns: Netns):
    """guest -- router (the ip6 table, every part; the guest's elements; forwarding on) --
    far side. From the guest's own /64 a datagram leaves with the router's uplink address
    (the control); from another /64 the source check drops it (its counter 1). Its RA towards
    the router meets the RA guard (counter 1), while its neighbour solicitation for fe80::1
    is answered (the router's MAC learnt) and so is its echo from its link-local address."""
    guest, router, far = routed(netns)
    facts.nft(router, script("ip6", TABLE, nat6_layout(TABLE)) + ELEMENTS)
    netns.ip(guest, "-6", "neigh", "flush", "dev", "eth0")

    got = udp_across(netns, guest, far, [(OWN, "own"), (FOREIGN, "foreign")])
    assert got == {"own": UPLINK}  # masqueraded from its /64; nothing from the other /64
    seen = counted(router)
    assert seen[MASQ] == 1 and seen[FOREIGN_DROP] == 1, seen
    # the first datagram needed the router's answer to the guest's NS for fe80::1
    entry = neighbour(netns, guest, "eth0", "fe80::1")
    assert entry.get("lladdr") == hg_mac(netns, router), entry

    netns.py(guest, RA, "eth0")
    assert wait_for(lambda: counted(router)[RA_GUARD] == 1, timeout=1.0), counted(router)
    assert counted(router)[UNTRACKED] == 0  # the guard, not the untracked drop, took it

    reply = netns.py(guest, ECHO, "eth0").stdout.split()
    assert reply[0] == "reply" and reply[1].startswith("fe80::1"), reply

    # a DHCPv6 server's reply (from port 547) is dropped as such; the same datagram from
    # another port goes on to guest_in, whose last rule drops it (the control: same path)
    netns.py(guest, DATAGRAM, "eth0", "547")
    assert counted(router)[DHCP6_SERVER] == 1, counted(router)
    netns.py(guest, DATAGRAM, "eth0", "5470")
    seen = counted(router)
    assert seen[DHCP6_SERVER] == 1 and seen["counter drop"] == 1, seen


def test_nothing_new_reaches_the_guest_but_replies_do(netns: Netns):
    """The far side, given a route to the guest's /64 (a routed pool), reaches it without
    the table (the path works); with it, its new datagram is dropped by ``oifname @taps``
    (counter 1), while the answer to the guest's own datagram comes back (de-masqueraded)."""
    guest, router, far = routed(netns)
    netns.ip(router, "-6", "route", "add", f"{OWN64}/64", "dev", "hg")
    netns.ip(far, "-6", "route", "add", f"{OWN64}/64", "via", UPLINK)

    def unsolicited(tag: str) -> list:
        receiver = netns.start(guest, facts.RECEIVE, "9002")
        netns.py(far, facts.SEND, json.dumps([[FAR, OWN, 9002, tag]]))
        return json.loads(receiver.communicate("sent\n", timeout=10)[0])

    assert unsolicited("before") == [[FAR, "before"]]
    facts.nft(router, script("ip6", TABLE, nat6_layout(TABLE)) + ELEMENTS)
    assert unsolicited("new") == []
    assert counted(router)[TOWARDS_GUEST] == 1, counted(router)
    netns.start(far, UDP_ECHO, "9001")
    assert netns.py(guest, ASK, OWN, FAR, "9001").stdout.split() == [FAR, "asked"]
    assert counted(router)[MASQ] == 1


def test_neighbour_discovery_needs_its_accept_before_the_untracked_drop(netns: Netns):
    """Conntrack leaves ND untracked: without the table's ND accept (deleted here), the
    guest's solicitation for fe80::1 meets the untracked drop and stays unanswered, and
    nothing is forwarded. The control is the test above, the same path with the rule."""
    guest, router, far = routed(netns)
    facts.nft(router, script("ip6", TABLE, nat6_layout(TABLE)) + ELEMENTS)
    handles = sh("ip", "netns", "exec", router, "nft", "-a", "list", "chain", "ip6", TABLE, "input")
    (line,) = [ln for ln in handles.stdout.splitlines() if ND_ACCEPT in ln]
    handle = line.rsplit("# handle ", 1)[1].strip()
    sh(
        "ip",
        "netns",
        "exec",
        router,
        "nft",
        "delete",
        "rule",
        "ip6",
        TABLE,
        "input",
        "handle",
        handle,
    )
    netns.ip(guest, "-6", "neigh", "flush", "dev", "eth0")

    assert udp_across(netns, guest, far, [(OWN, "own")]) == {}
    assert "lladdr" not in neighbour(netns, guest, "eth0", "fe80::1")
    assert counted(router)[UNTRACKED] >= 1, counted(router)
