"""Packets conntrack cannot track, from a guest, with real packets. Such a packet (TCP with SYN
and FIN, TCP with no flags, a bad TCP or UDP checksum; or one someone's notrack rule left
untracked) has no connection: no masquerade and no egress policy rule sees it, so without the
rules this file proves it would leave the uplink with the guest's private address.

Frames are written into the VM's real tap (or, in clone and CNI mode, the tap in its
namespace) through /dev/net/tun, as the VMM writes them, claiming no checksum offload, so the
kernel checks their checksums as it does a guest's. What reaches the "internet" namespace is
read off its end of the uplink (AF_PACKET), so dropped and un-NATed packets are both seen.
Every kind of invalid packet stands beside a valid packet of its kind (a SYN, a UDP datagram,
a datagram in two fragments) sent the same way, which arrives, masqueraded."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_isolation import heard, sink

pytestmark = pytest.mark.privileged

PUBLIC, PRIVATE, NATED = "198.51.100.1", "10.99.0.1", "203.0.113.2"
SEND = r"""
import fcntl, json, os, socket, struct, sys, time
tap, dst_mac, src_mac, src = sys.argv[1:5]
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s & 0xFFFF) + (s >> 16)
    return ~(s + (s >> 16)) & 0xFFFF
def ip(proto, dst, ident, body, frag=0):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident, frag, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + body
def l4(proto, dst, body, at, bad):
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst)
    pseudo += struct.pack("!BBH", 0, proto, len(body))
    c = csum(pseudo + body) ^ (0x1234 if bad else 0)
    return body[:at] + struct.pack("!H", c) + body[at + 2:]
def tcp(dst, port, flags, bad=False):
    return l4(6, dst, struct.pack("!HHIIBBHHH", 40000, port, 1, 0, 0x50, flags, 512, 0, 0), 16, bad)
def udp(dst, port, bad=False):
    return l4(17, dst, struct.pack("!HHHH", 40000, port, 48, 0) + b"x" * 40, 6, bad)
def packets(kind, dst, port, n):
    if kind in ("synfin", "noflags", "badtcp", "syn"):
        flags = {"synfin": 0x03, "noflags": 0x00}.get(kind, 0x02)
        return [ip(6, dst, n, tcp(dst, port, flags, bad=kind == "badtcp"))]
    if kind in ("badudp", "udp"):
        return [ip(17, dst, n, udp(dst, port, bad=kind == "badudp"))]
    whole = udp(dst, port)  # 48 bytes: two fragments of 24
    head, tail = ip(17, dst, n, whole[:24], frag=0x2000), ip(17, dst, n, whole[24:], frag=3)
    return {"head": [head], "tail": [tail], "frags": [head, tail]}[kind]
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", tap.encode(), 0x0002 | 0x1000))  # TAP, NO_PI
def ready():  # the carrier seen (and, for a bridge port, the port forwarding)
    sys_dir = f"/sys/class/net/{tap}"
    with open(f"{sys_dir}/operstate") as f:
        up = f.read().strip() == "up"
    if os.path.exists(f"{sys_dir}/brport/state"):
        with open(f"{sys_dir}/brport/state") as f:
            up = up and f.read().strip() == "3"
    return up
end = time.monotonic() + 15  # (as long as a busy machine takes)
while not ready() and time.monotonic() < end:
    time.sleep(0.01)
eth = bytes.fromhex(dst_mac.replace(":", "") + src_mac.replace(":", "")) + b"\x08\x00"
for kind, dst, port, n in json.loads(sys.argv[5]):
    for p in packets(kind, dst, port, n):
        os.write(fd, eth + p)
os.close(fd)
"""
SNIFF = r"""
import json, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.bind((sys.argv[1], 0)); s.settimeout(0.1)
print("ready", flush=True)
sys.stdin.readline()  # sent
end, seen = time.monotonic() + float(sys.argv[2]), []
while True:
    if time.monotonic() >= end:  # what arrived by then is still read: a slow reader misses none
        s.setblocking(False)
    try:
        data, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    except BlockingIOError:
        break
    if addr[2] != socket.PACKET_OUTGOING:
        ident, = struct.unpack("!H", data[4:6])
        seen.append([socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20]), ident])
print(json.dumps(seen), flush=True)
"""
INVALID = ("synfin", "noflags", "badtcp", "badudp", "head", "tail")
KINDS = (*INVALID, "syn", "udp", "frags")
"""each invalid kind with its valid control: a SYN (for the TCP kinds), a UDP datagram, a
datagram in two fragments (for the lone ones)"""
CONNTRACKED = ("synfin", "noflags", "badtcp", "badudp")
"""the invalid kinds that reach the filter hooks: a lone fragment never leaves defragmentation"""


@pytest.fixture
def net(host: Host) -> Iterator[Host]:
    for addr in (PUBLIC, PRIVATE):  # behind the uplink, routed by the host
        sh("ip", "-n", host.inet, "addr", "add", f"{addr}/32", "dev", "lo")
        host.run("ip", "route", "add", f"{addr}/32", "via", "203.0.113.1")
    yield host


def mac_of(ns: str, dev: str) -> str:
    return json.loads(sh("ip", "-n", ns, "-j", "link", "show", dev).stdout)[0]["address"]


def send(ns: str, tap: str, dst_mac: str, rec: dict, plan: list) -> None:
    """Write [kind, destination, port, IP id] packets into ``tap`` (in ``ns``) as its guest."""
    argv = [tap, dst_mac, rec["mac"], rec["guest_ip"], json.dumps(plan)]
    sh("ip", "netns", "exec", ns, sys.executable, "-c", SEND, *argv)


def exchange(host: Host, ns: str, tap: str, dst_mac: str, rec: dict, kinds, dsts):
    """Write each kind of packet to each destination into ``tap`` (in ``ns``); what arrives
    behind the uplink, by (kind, destination): [source, ...] (one per packet or fragment)."""
    plan = [[k, d, 1000 + i, 100 * i + j] for i, k in enumerate(kinds) for j, d in enumerate(dsts)]
    sniff = subprocess.Popen(
        ["ip", "netns", "exec", host.inet, sys.executable, "-c", SNIFF, "down0", "0.6"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sniff.stdout is not None and sniff.stdout.readline().strip() == "ready"
    send(ns, tap, dst_mac, rec, plan)
    seen = json.loads(sniff.communicate("sent\n", timeout=30)[0])
    got: dict[tuple[str, str], list[str]] = {(k, d): [] for k, _, _, _ in plan for d in dsts}
    by_id = {n: (k, d) for k, d, _, n in plan}
    for s, d, n in seen:
        if n in by_id and by_id[n][1] == d:
            got[by_id[n]].append(s)
    return got


def ipt_count(host: Host, needle: str) -> int:
    lines = [x for x in host.run("iptables-nft-save", "-c").stdout.splitlines() if needle in x]
    assert len(lines) == 1, lines
    return int(lines[0].split("]")[0].strip("[").split(":")[0])


def guard(host: Host) -> int:
    """Packets the second guard (after source NAT) dropped."""
    return chain_counter(host, "unmasked", "@masq")


def chain_counter(host: Host, chain: str, needle: str) -> int:
    text = host.run("nft", "list", "chain", "ip", "firecracker", chain).stdout
    line = next(x for x in text.splitlines() if needle in x and "counter packets" in x)
    return int(line.split("counter packets ")[1].split()[0])


def judged(args: list[str], rec: dict, got: dict, allowed: set[str]) -> None:
    """Nothing invalid leaves; each valid control reaches what the policy allows, NATed."""
    for (kind, dst), sources in got.items():
        assert rec["guest_ip"] not in sources, (kind, dst, sources)
        if kind in INVALID:
            assert sources == [], (kind, dst, sources)
        elif dst in allowed:  # (a fragmented datagram may leave whole or in fragments)
            assert sources and set(sources) == {NATED}, (kind, dst, sources, args)
        else:
            assert sources == [], (kind, dst, sources, args)


POLICIES = [
    ("nft", [], {PUBLIC, PRIVATE}),
    ("nft", ["--egress", "public"], {PUBLIC}),
    ("nft", ["--egress", "none"], set()),
    ("nft", ["--egress", "none", "--allow-out", f"{PUBLIC}/32"], {PUBLIC}),
    ("nft", ["--deny-out", "10.0.0.0/8"], {PUBLIC}),
    ("iptables", [], {PUBLIC, PRIVATE}),
    ("iptables", ["--fix-forward-policy"], {PUBLIC, PRIVATE}),  # under a FORWARD DROP policy
]


@pytest.mark.parametrize(("backend", "args", "allowed"), POLICIES)
def test_invalid_packets_never_leave(net: Host, backend: str, args: list[str], allowed: set):
    if "--fix-forward-policy" in args:  # what Docker does: an accept above ours passed all
        net.run("iptables-nft", "-P", "FORWARD", "DROP")
    rec = json.loads(net.fireroute("up", "g", "--backend", backend, *args, "--json").stdout)[0]
    tap = rec["host_dev"]
    got = exchange(net, net.ns, tap, mac_of(net.ns, tap), rec, KINDS, [PUBLIC, PRIVATE])
    judged(args, rec, got, allowed)
    dropped = 2 * len(CONNTRACKED)  # each conntracked invalid kind, to both destinations
    if backend == "nft":
        assert chain_counter(net, "forward", "ct state invalid,untracked iifname @taps") == dropped
        assert guard(net) == 0  # (not needed)
    else:
        assert ipt_count(net, f"-A FORWARD -i {tap} -m conntrack --ctstate INVALID") == dropped
    assert net.fireroute("check").returncode == 0


def test_the_second_guard_holds_alone(net: Host):
    """With the invalid-packet rules gone (drift, or a path nobody thought of), what should
    have been masqueraded and was not is still dropped after source NAT; masqueraded
    packets pass it (the controls), and check names the missing rule."""
    rec = json.loads(net.fireroute("up", "g", "--deny-out", "10.0.0.0/8", "--json").stdout)[0]
    tap = rec["host_dev"]
    listing = net.run("nft", "-a", "list", "chain", "ip", "firecracker", "forward").stdout
    for line in listing.splitlines():
        if "ct state invalid,untracked" in line:
            handle = line.rsplit("# handle ", 1)[1]
            net.run("nft", "delete", "rule", "ip", "firecracker", "forward", "handle", handle)
    got = exchange(net, net.ns, tap, mac_of(net.ns, tap), rec, KINDS, [PUBLIC, PRIVATE])
    judged([], rec, got, {PUBLIC})
    assert guard(net) == 2 * len(CONNTRACKED)
    p = net.fireroute("check", check=False)
    assert p.returncode == 1 and "ct state invalid,untracked" in p.stdout + p.stderr
    net.fireroute("restore")
    assert net.fireroute("check").returncode == 0


def test_iptables_restore_keeps_them_out(net: Host):
    """restore writes the VM's block again in order: the drop it puts back comes before the
    guest's ACCEPT (which excludes untrackable packets itself too), so they still never
    leave; the valid controls still do."""
    rec = json.loads(net.fireroute("up", "g", "--backend", "iptables", "--json").stdout)[0]
    tap = rec["host_dev"]
    drop = next(
        r for r in net.iptables_rules() if f"FORWARD -i {tap} -m conntrack --ctstate INV" in r
    )
    net.run("sh", "-c", f"iptables-nft {drop.replace('-A', '-D', 1)}")
    assert net.fireroute("check", check=False).returncode == 1
    net.fireroute("restore")
    assert net.fireroute("check").returncode == 0
    rules = net.iptables_rules()
    accept = next(i for i, r in enumerate(rules) if f"-i {tap} -o" in r and "ACCEPT" in r)
    assert rules.index(drop) < accept  # where it was rendered
    got = exchange(net, net.ns, tap, mac_of(net.ns, tap), rec, KINDS, [PUBLIC])
    judged([], rec, got, {PUBLIC})


NOTRACK = """table ip frt_notrack {
  chain pre { type filter hook prerouting priority raw; policy accept; iifname "%s" notrack; }
}
"""


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_untracked_guest_packets_are_dropped(net: Host, backend: str):
    """Someone else's notrack rule makes a guest's valid packets untracked: no masquerade
    either. They are dropped; without the notrack rule the same packets arrive, NATed."""
    rec = json.loads(net.fireroute("up", "g", "--backend", backend, "--json").stdout)[0]
    tap, kinds = rec["host_dev"], ["syn", "udp"]
    sh("ip", "netns", "exec", net.ns, "nft", "-f", "-", input=NOTRACK % tap)
    got = exchange(net, net.ns, tap, mac_of(net.ns, tap), rec, kinds, [PUBLIC])
    assert all(sources == [] for sources in got.values()), got
    if backend == "nft":
        assert chain_counter(net, "forward", "ct state invalid,untracked iifname @taps") == 2
    else:
        assert ipt_count(net, f"-A FORWARD -i {tap} -m conntrack --ctstate INVALID") == 2
    net.run("nft", "delete", "table", "ip", "frt_notrack")
    got = exchange(net, net.ns, tap, mac_of(net.ns, tap), rec, kinds, [PUBLIC])
    assert all(sources == [NATED] for sources in got.values()), got  # the control


def bridge_guest(net: Host, *more: str) -> tuple[str, str, str, dict]:
    """A masquerading bridge guest: its tap is a bridge port, frames go to the bridge."""
    rec = json.loads(net.fireroute("up", "b", "--mode", "bridge", "--bridge-address",
                     "192.168.1.7/24", "--guest-ip", "192.168.1.20/24", "--masquerade",
                     *more, "--json").stdout)[0]  # fmt: skip
    return net.ns, rec["host_dev"], mac_of(net.ns, str(rec["bridge"])), rec


def bridge_guest_iptables(net: Host) -> tuple[str, str, str, dict]:
    return bridge_guest(net, "--backend", "iptables")


def clone_guest(net: Host) -> tuple[str, str, str, dict]:
    """A clone: its tap is in its namespace, whose own NAT cannot track these either."""
    rec = json.loads(net.fireroute("up", "c", "--mode", "clone", "--json").stdout)[0]
    return rec["netns"], rec["tap"], mac_of(rec["netns"], rec["tap"]), rec


def cni_guest(net: Host) -> tuple[str, str, str, dict]:
    """A CNI attachment: the tap in the container's namespace is wired to the host veth."""
    from tests.cni.runtime import Runtime

    rt = Runtime(net)
    res = rt.add("c1abc", rt.netns("c1"))
    rec = {"guest_ip": res["ips"][0]["address"].split("/")[0], "mac": "02:00:00:00:00:01"}
    return rt.made[0], "tap0", mac_of(net.ns, res["interfaces"][0]["name"]), rec


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (bridge_guest, "ct state invalid,untracked iifname . ip saddr @bridged"),
        (clone_guest, "ct state invalid,untracked iifname @taps"),
        (cni_guest, "ct state invalid,untracked iifname @taps"),
        (bridge_guest_iptables, "-A FORWARD -s 192.168.1.20/32 -i br0 -m conntrack --ctstate I"),
    ],
)
def test_every_mode(net: Host, make, rule: str):
    ns, tap, dst_mac, rec = make(net)
    try:
        got = exchange(net, ns, tap, dst_mac, rec, KINDS, [PUBLIC])
        judged([], rec, got, {PUBLIC})
        if rule.startswith("-A "):
            assert ipt_count(net, rule) == len(CONNTRACKED)
        else:
            assert chain_counter(net, "forward", rule) == len(CONNTRACKED)
            assert guard(net) == 0
    finally:
        if make is cni_guest:
            sh("ip", "netns", "del", ns, check=False)


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_invalid_packets_to_the_host_are_dropped(net: Host, backend: str):
    """The same kinds sent to the host itself, at the guest's gateway on the port it may use:
    dropped first in input, counted; the valid datagram reaches the host's socket."""
    args = ("--backend", backend, "--allow-host-port", "5353/udp", "--json")
    rec = json.loads(net.fireroute("up", "g", *args).stdout)[0]
    tap, gw = rec["host_dev"], rec["tap_ip"]
    got = sink(net.ns, "5353", "x" * 40)  # (the valid datagram, sent last, ends the wait)
    plan = [[k, gw, 5353, i] for i, k in enumerate(("synfin", "noflags", "badtcp", "badudp"))]
    send(net.ns, tap, mac_of(net.ns, tap), rec, [*plan, ["udp", gw, 5353, 9]])
    assert heard(got) == [f"{'x' * 40}@{rec['guest_ip']}"]
    if backend == "nft":
        assert chain_counter(net, "input", "ct state invalid,untracked iifname @taps") == 4
    else:
        assert ipt_count(net, f"-A INPUT -i {tap} -m conntrack --ctstate INVALID") == 4
