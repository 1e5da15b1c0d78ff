"""The kernel facts the IPv6 design (docs/ipv6-plan.md, section 0) stands on, each asserted
against the kernel in throwaway namespaces beside its positive control, so that a kernel or nft
that behaved otherwise fails here before the design is built on it:

- F3: a tap made and set up with default sysctls has no IPv6 address until it has carrier;
  then the kernel adds its EUI-64 link-local (the control of F4).
- F4: ``addr_gen_mode=1`` written after ``up`` (with ``disable_ipv6=0``) keeps that address
  away when carrier comes; ``fe80::1/64 nodad`` is listed with ``nodad``. Written after
  carrier, it takes no address away (not in the plan's table; the order depends on it).
- F2: the same ``fe80::1/64 nodad`` on several links of one namespace.
- F6: ``iifname . ip6 saddr & MASK64 != @vms drop`` passes a source in the link's /64 and drops
  one of another /64, with real packets through a forwarding namespace.
- F1: ``masquerade`` in an ``ip6`` (or ``inet``) nat table: the far side sees the router's
  uplink address.
- F8: a port published on ``[::1]`` (output dnat to a guest, then masquerade) never connects,
  while the same rules for a host global address do.
- F9: switching ``all.forwarding`` on removes an RA-learned default route when the uplink has
  ``accept_ra=1``, and keeps it when ``accept_ra=2`` was written first.
- F11: ``fe80::1`` cannot be added to a tap made under ``default.disable_ipv6=1`` until the
  tap's own ``disable_ipv6=0`` is written.

Carrier comes as a VMM brings it: a process opens /dev/net/tun and attaches to the tap."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import needs_root_to, sh
from tests.kernel.test_ipv6 import link_local

pytestmark = [pytest.mark.privileged, needs_root_to("create network namespaces")]

MASK64 = "ffff:ffff:ffff:ffff::"
OWN, FOREIGN = "fd12:0:0:1::2", "fd12:0:0:2::2"
"""a guest's address in its link's /64, and one of another /64"""
UPLINK, FAR = "2001:db8:f::2", "2001:db8:f::1"
"""the router's uplink address and the far side's"""
UDP_PORT = 9000

HOLD = r"""
import fcntl, os, struct, sys
fds = []
for tap in sys.argv[1:]:  # attach to each tap as a VMM does: the tap gains carrier
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", tap.encode(), 0x0002 | 0x1000))
    fds.append(fd)
print("ready", flush=True)
sys.stdin.readline()
"""
RECEIVE = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1]))); s.settimeout(0.3)
print("ready", flush=True)
sys.stdin.readline()  # sent
seen = []
while True:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        break
    seen.append([addr[0], data.decode()])
print(json.dumps(seen), flush=True)
"""
SEND = r"""
import json, socket, sys
for src, dst, port, tag in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.sendto(tag.encode(), (dst, port)); s.close()
"""
SERVE = r"""
import socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 80)); s.listen(4); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hello\n"); c.close()
"""
CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_INET6); s.settimeout(1.5)
try:
    s.connect((sys.argv[1], 8080))
    s.settimeout(15); print(s.makefile().readline().strip())  # (connected: the server's line)
except OSError as e:
    print("FAIL", e)
"""
RA = r"""
import socket, struct, sys
dev = sys.argv[1]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.bind(("fe80::1", 0, 0, socket.if_nametoindex(dev)))
# type 134, code 0, checksum (the kernel's), hop limit 64, no flags, router lifetime 1800 s,
# reachable and retransmit timers unspecified
s.sendto(struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0),
         ("ff02::1", 0, 0, socket.if_nametoindex(dev)))
"""


def wait_for(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.02)


class Netns:
    """Namespaces made for one test (named ``frv6-<tag>-<name>``), removed with whatever runs
    in them."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def add(self, name: str, *sysctls: str) -> str:
        ns = f"frv6-{self.tag}-{name}"
        sh("ip", "netns", "add", ns)
        self.made.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for setting in sysctls:
            self.sysctl(ns, setting)
        return ns

    def sysctl(self, ns: str, setting: str) -> None:
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", setting)

    def ip(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "-n", ns, *args, check=check)

    def py(self, ns: str, code: str, *args: str) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, sys.executable, "-c", code, *args)

    def start(self, ns: str, code: str, *args: str) -> subprocess.Popen:
        """A Python process in ``ns`` that prints "ready" once set up, then waits on stdin."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in self.made:
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def netns() -> Iterator[Netns]:
    n = Netns()
    try:
        yield n
    finally:
        n.close()


def wait_up(n: Netns, links: list[tuple[str, str]]) -> None:
    """Wait until each (namespace, device) is operationally up: the kernel has handled its
    carrier (until then IPv6 has no multicast route and no link-local source on it)."""

    def state(ns: str, dev: str) -> str:
        return json.loads(n.ip(ns, "-j", "link", "show", "dev", dev).stdout)[0]["operstate"]

    for ns, dev in links:
        n.ip(ns, "link", "set", dev, "up")
    for ns, dev in links:
        assert wait_for(lambda ns=ns, dev=dev: state(ns, dev) == "UP"), (ns, dev, state(ns, dev))


def inet6(n: Netns, ns: str, dev: str) -> list[dict]:
    """The device's IPv6 addresses as ``ip -j addr`` lists them."""
    link = json.loads(n.ip(ns, "-j", "addr", "show", "dev", dev).stdout)[0]
    return [a for a in link.get("addr_info", []) if a.get("family") == "inet6"]


def addrs6(n: Netns, ns: str, dev: str) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for a in inet6(n, ns, dev)}


def mac(n: Netns, ns: str, dev: str) -> str:
    return json.loads(n.ip(ns, "-j", "link", "show", "dev", dev).stdout)[0]["address"]


def counters(ns: str, family: str, table: str) -> dict[str, int]:
    """Packets counted by each rule of the table that has a counter, by the rule's comment."""
    listed = sh("ip", "netns", "exec", ns, "nft", "-j", "list", "table", family, table)
    out = json.loads(listed.stdout)
    got = {}
    for item in out["nftables"]:
        rule = item.get("rule")
        if rule and "comment" in rule:
            got[rule["comment"]] = next(
                e["counter"]["packets"] for e in rule["expr"] if "counter" in e
            )
    return got


def nft(ns: str, script: str) -> None:
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=script)


# --- taps: F3, F4, F2, F11 ----------------------------------------------------------------------


def test_f3_f4_a_tap_gets_its_eui64_link_local_at_carrier_unless_addr_gen_mode_is_1(
    netns: Netns,
):
    """Two taps made and set up under default sysctls: no address on either before carrier.
    The one given what a v6 tap gets (addr_gen_mode=1 after up, disable_ipv6=0, fe80::1 nodad)
    keeps exactly fe80::1 when carrier comes; the other (the control) gains its EUI-64
    link-local beside it."""
    ns = netns.add("taps")
    for tap in ("tv6", "tctl"):
        netns.ip(ns, "tuntap", "add", "dev", tap, "mode", "tap")
        netns.ip(ns, "link", "set", tap, "up")
    time.sleep(0.2)
    assert addrs6(netns, ns, "tv6") == addrs6(netns, ns, "tctl") == set()  # F3: no carrier yet
    netns.sysctl(ns, "net/ipv6/conf/tv6/addr_gen_mode=1")
    netns.sysctl(ns, "net/ipv6/conf/tv6/disable_ipv6=0")
    for tap in ("tv6", "tctl"):
        netns.ip(ns, "address", "add", "fe80::1/64", "dev", tap, "nodad")
    eui64 = f"{link_local(mac(netns, ns, 'tctl'))}/64"

    netns.start(ns, HOLD, "tv6", "tctl")  # one process brings carrier to both at once
    assert wait_for(lambda: eui64 in addrs6(netns, ns, "tctl")), addrs6(netns, ns, "tctl")
    assert addrs6(netns, ns, "tctl") == {"fe80::1/64", eui64}  # F3: the control's EUI-64
    time.sleep(0.2)  # (the link event of both taps was handled with the control's)
    assert json.loads(netns.ip(ns, "-j", "link", "show", "tv6").stdout)[0]["operstate"] == "UP"
    listed = inet6(netns, ns, "tv6")
    assert [(a["local"], a["prefixlen"], a.get("nodad")) for a in listed] == [
        ("fe80::1", 64, True)
    ]  # F4: no EUI-64 address, and fe80::1 listed with nodad


def test_f4_addr_gen_mode_1_written_after_carrier_takes_no_address_away(netns: Netns):
    """Not in the plan's table, but its order rests on it: the sysctl only stops addresses
    to come. Written once the VMM's carrier has brought the EUI-64 link-local, that address
    stays (so the write must come before the VMM attaches, and a repair of a tap with carrier
    must delete the address itself); ``address del`` takes it, and no other comes back."""
    ns = netns.add("late")
    netns.ip(ns, "tuntap", "add", "dev", "tv6", "mode", "tap")
    netns.ip(ns, "link", "set", "tv6", "up")
    eui64 = f"{link_local(mac(netns, ns, 'tv6'))}/64"
    netns.start(ns, HOLD, "tv6")
    assert wait_for(lambda: addrs6(netns, ns, "tv6") == {eui64}), addrs6(netns, ns, "tv6")
    netns.sysctl(ns, "net/ipv6/conf/tv6/addr_gen_mode=1")
    time.sleep(0.2)
    assert addrs6(netns, ns, "tv6") == {eui64}
    netns.ip(ns, "address", "del", eui64, "dev", "tv6")
    netns.ip(ns, "address", "add", "fe80::1/64", "dev", "tv6", "nodad")
    time.sleep(0.2)
    assert addrs6(netns, ns, "tv6") == {"fe80::1/64"}


def test_f2_fe80_1_nodad_on_several_links_of_one_namespace(netns: Netns):
    """Two taps and a veth of one namespace each hold fe80::1/64, listed nodad, link scope."""
    ns = netns.add("links")
    links = ("tapa", "tapb", "vetha")
    netns.ip(ns, "tuntap", "add", "dev", "tapa", "mode", "tap")
    netns.ip(ns, "tuntap", "add", "dev", "tapb", "mode", "tap")
    netns.ip(ns, "link", "add", "vetha", "type", "veth", "peer", "name", "vethb")
    for dev in links:
        netns.ip(ns, "link", "set", dev, "up")
        netns.ip(ns, "address", "add", "fe80::1/64", "dev", dev, "nodad")
    for dev in links:
        ours = [a for a in inet6(netns, ns, dev) if a["local"] == "fe80::1"]
        assert [(a["prefixlen"], a.get("nodad"), a["scope"]) for a in ours] == [
            (64, True, "link")
        ], (dev, ours)


def test_f11_fe80_1_is_refused_on_a_tap_made_under_default_disable_ipv6_until_its_own_is_0(
    netns: Netns,
):
    """Under default.disable_ipv6=1 (a hardened host) the tap refuses the address with that
    message; after the tap's own disable_ipv6=0 the same line works (the control)."""
    ns = netns.add("hard", "net.ipv6.conf.default.disable_ipv6=1")
    netns.ip(ns, "tuntap", "add", "dev", "tv6", "mode", "tap")
    add = ("address", "add", "fe80::1/64", "dev", "tv6", "nodad")
    refused = netns.ip(ns, *add, check=False)
    assert refused.returncode != 0
    assert "IPv6 is disabled on this device" in refused.stderr, refused.stderr
    assert addrs6(netns, ns, "tv6") == set()
    netns.sysctl(ns, "net/ipv6/conf/tv6/disable_ipv6=0")
    netns.ip(ns, *add)  # the control: the same line, after the tap's own sysctl
    assert addrs6(netns, ns, "tv6") == {"fe80::1/64"}


# --- packets through a router: F6, F1 -----------------------------------------------------------

NO_DAD = ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")


def routed(n: Netns) -> tuple[str, str, str]:
    """guest (eth0: OWN/64 and FOREIGN/64, default via fe80::1) -- hg: router, fe80::1 nodad,
    forwarding on; up0: UPLINK/64 -- down0: far side, FAR/64. The far side has no route back:
    what it receives is one-way UDP."""
    guest, router, far = (n.add(name, *NO_DAD) for name in ("g", "r", "f"))
    n.ip(guest, "link", "add", "eth0", "type", "veth", "peer", "name", "hg", "netns", router)
    n.ip(router, "link", "add", "up0", "type", "veth", "peer", "name", "down0", "netns", far)
    for ns, dev, addr in (
        (guest, "eth0", f"{OWN}/64"),
        (guest, "eth0", f"{FOREIGN}/64"),
        (router, "hg", "fe80::1/64"),
        (router, "up0", f"{UPLINK}/64"),
        (far, "down0", f"{FAR}/64"),
    ):
        n.ip(ns, "address", "add", addr, "dev", dev, "nodad")
    wait_up(n, [(guest, "eth0"), (router, "hg"), (router, "up0"), (far, "down0")])
    n.ip(guest, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    n.sysctl(router, "net.ipv6.conf.all.forwarding=1")
    return guest, router, far


def udp_across(n: Netns, guest: str, far: str, sends: list[tuple[str, str]]) -> dict[str, str]:
    """Send one datagram per (source, tag) from the guest to the far side: by tag, the source
    the far side saw it from (tags it never got are absent)."""
    receiver = n.start(far, RECEIVE, str(UDP_PORT))
    n.py(guest, SEND, json.dumps([[src, FAR, UDP_PORT, tag] for src, tag in sends]))
    seen = json.loads(receiver.communicate("sent\n", timeout=10)[0])
    return {tag: src for src, tag in seen}


SOURCE_CHECK = f"""
table ip6 t {{
    set vms {{ type ifname . ipv6_addr; elements = {{ "hg" . fd12:0:0:1:: }} }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        iifname . ip6 saddr & {MASK64} != @vms counter drop comment "own64"
    }}
}}
"""


def test_f6_a_guest_sends_only_from_its_own_64(netns: Netns):
    """UDP from the guest to the far side, through the router: from the guest's own /64 it
    arrives (the control), from another /64 the rule drops it (its counter 1); before the
    table exists both arrive."""
    guest, router, far = routed(netns)
    # without the rule both sources are forwarded (the drop below is the rule's doing)
    assert udp_across(netns, guest, far, [(OWN, "own0"), (FOREIGN, "foreign0")]) == {
        "own0": OWN,
        "foreign0": FOREIGN,
    }
    nft(router, SOURCE_CHECK)
    listed = sh("ip", "netns", "exec", router, "nft", "list", "table", "ip6", "t").stdout
    assert f"iifname . ip6 saddr & {MASK64} != @vms" in listed  # listed back verbatim,
    assert '"hg" . fd12:0:0:1::' in listed  # the element too
    got = udp_across(netns, guest, far, [(OWN, "own"), (FOREIGN, "foreign")])
    assert got == {"own": OWN}  # the own /64 passes (the control), the other /64 does not
    assert counters(router, "ip6", "t") == {"own64": 1}


MASQUERADE = """
table {family} nat {{
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        oifname "up0" counter masquerade comment "masq"
    }}
}}
"""


@pytest.mark.parametrize("family", ["ip6", "inet"])
def test_f1_masquerade_leaves_from_the_uplink_address(netns: Netns, family: str):
    """The far side sees the guest's address without the table (the control), the router's
    uplink address with it, in an ``ip6`` table (the design's) as in an ``inet`` one."""
    guest, router, far = routed(netns)
    assert udp_across(netns, guest, far, [(OWN, "plain")]) == {"plain": OWN}
    nft(router, MASQUERADE.format(family=family))
    assert udp_across(netns, guest, far, [(OWN, "nat")]) == {"nat": UPLINK}
    assert counters(router, family, "nat") == {"masq": 1}


# --- a published port: F8 -----------------------------------------------------------------------


def published(address: str) -> str:
    return f"""
table ip6 nat {{
    chain output {{
        type nat hook output priority -100; policy accept;
        ip6 daddr {address} tcp dport 8080 counter dnat to [{OWN}]:80 comment "dnat"
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        ip6 daddr {OWN} tcp dport 80 counter masquerade comment "masq"
    }}
}}
"""


@pytest.mark.parametrize(
    ("address", "answer"),
    [("::1", "FAIL"), (UPLINK, "hello")],
    ids=["loopback-never-connects", "host-global-address-connects"],
)
def test_f8_a_port_published_on_loopback_is_not_forwarded(netns: Netns, address: str, answer: str):
    """A host process connects to ``address``:8080, which the output hook sends to the
    guest's port 80 and postrouting masquerades. On ::1 both rules count and nothing answers;
    on a host global address the guest answers (the control)."""
    host, guest = netns.add("h", *NO_DAD), netns.add("g", *NO_DAD)
    netns.ip(guest, "link", "add", "eth0", "type", "veth", "peer", "name", "hg", "netns", host)
    netns.ip(host, "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
    for ns, dev, addr in ((guest, "eth0", f"{OWN}/64"), (host, "hg", "fe80::1/64")):
        netns.ip(ns, "address", "add", addr, "dev", dev, "nodad")
    netns.ip(host, "address", "add", f"{UPLINK}/64", "dev", "up0", "nodad")
    wait_up(netns, [(guest, "eth0"), (host, "hg"), (host, "up0"), (host, "up0p")])
    netns.ip(guest, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    netns.ip(host, "-6", "route", "add", f"{OWN}/64", "dev", "hg")
    netns.start(guest, SERVE)
    nft(host, published(address))
    got = netns.py(host, CONNECT, address).stdout.strip()
    assert got.split()[0] == answer, got
    seen = counters(host, "ip6", "nat")
    assert seen["dnat"] == 1 and seen["masq"] == 1, seen  # both rules met the SYN


# --- forwarding and RA-learned routes: F9 -------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_ra", "kept"),
    [("1", False), ("2", True)],
    ids=["accept_ra-1-route-removed", "accept_ra-2-route-kept"],
)
def test_f9_forwarding_on_and_a_default_route_learnt_from_an_ra(
    netns: Netns, accept_ra: str, kept: bool
):
    """The host's uplink takes its default route from an RA (sent by the upstream namespace
    from fe80::1, hop limit 255). Forwarding on removes it at once with accept_ra=1 and later
    RAs are ignored; with accept_ra=2 written first it stays and a later RA is taken (each
    case the other's control)."""
    host, upstream = netns.add("h", *NO_DAD), netns.add("u", *NO_DAD)
    netns.ip(host, "link", "add", "up0", "type", "veth", "peer", "name", "down0", "netns", upstream)
    netns.ip(upstream, "address", "add", "fe80::1/64", "dev", "down0", "nodad")
    wait_up(netns, [(host, "up0"), (upstream, "down0")])

    def ra_default() -> list[dict]:
        out = netns.ip(host, "-6", "-j", "route", "show", "default").stdout
        return [r for r in json.loads(out) if r.get("protocol") == "ra"]

    netns.py(upstream, RA, "down0")
    assert wait_for(lambda: bool(ra_default())), netns.ip(host, "-6", "route").stdout
    assert [(r["gateway"], r["dev"]) for r in ra_default()] == [("fe80::1", "up0")]
    if accept_ra == "2":
        netns.sysctl(host, "net/ipv6/conf/up0/accept_ra=2")
    netns.sysctl(host, "net.ipv6.conf.all.forwarding=1")
    assert bool(ra_default()) is kept, netns.ip(host, "-6", "route").stdout
    # a later RA: ignored with accept_ra=1 under forwarding, taken with accept_ra=2
    netns.ip(host, "-6", "route", "flush", "proto", "ra")
    netns.py(upstream, RA, "down0")
    assert wait_for(lambda: bool(ra_default()), timeout=1.0) is kept
