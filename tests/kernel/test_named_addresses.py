"""An address a request names (a clone address, a bridge guest's address) or an IPAM plugin
returns (a CNI guest's address and gateway) is checked against the whole host, as the pool
allocator's blocks are: the host's router, its own addresses, its neighbours, its routes,
loopback and every state file's leases. Each refusal is one line naming the address, what it
collides with and the VM, with the code of a conflict (exit 3, ConflictError, CNI error 100;
an address no host can have: exit 2, UsageError, CNI error 7), and nothing changed: kernel,
state file, and (CNI) the IPAM allocation released. Beside each, a free address is accepted
and works. Through the CLI, the Python API and the CNI plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cni.runtime import Runtime, leftovers, state_vms
from tests.cni.test_plugin import HOST_LOCAL, leases
from tests.conftest import Host, sh
from tests.reliability.helpers import one_line_error

pytestmark = pytest.mark.privileged

NEIGHBOUR = "203.0.113.7"  # a machine on the uplink's LAN (an address in the "internet")
STATIC = "192.0.2.99"  # a neighbour entry outside every route but the default one
ROUTED = "198.51.100.0/24"  # a route the host has, via its router

API_UP = """
import json, sys
import fireroute
from fireroute import request
from fireroute.cli import parser
from fireroute.cli.inputs import _options
args = parser.parse(["up", *sys.argv[2:]])  # the CLI's words, as an API call
try:
    fields = request.fields_of(_options(args))
    vm = fireroute.Host(sys.argv[1]).up(args.names[0], skip_conflicts=args.skip_conflicts, **fields)
    print(json.dumps({"ok": vm.as_dict()}))
except fireroute.api.FirerouteError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


PING = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.5)
echo = bytes((8, 0, 0xF7, 0xFE, 0, 1, 0, 0))  # type 8, checksum of the rest, id 1, seq 0
for _ in range(6):
    s.sendto(echo, (sys.argv[1], 0))
    try:
        while True:
            data, peer = s.recvfrom(2048)
            if peer[0] == sys.argv[1] and data[(data[0] & 15) * 4] == 0:
                sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"""


def ping(ns: str, addr: str) -> None:
    """An ICMP echo from namespace ``ns`` to ``addr`` that is answered (else it raises)."""
    sh("ip", "netns", "exec", ns, sys.executable, "-c", PING, addr)


def lan(host: Host) -> None:
    """A neighbour the host has really met (ARP), a static neighbour entry, a host route."""
    sh("ip", "-n", host.inet, "addr", "add", f"{NEIGHBOUR}/24", "dev", "down0")
    ping(host.ns, NEIGHBOUR)
    host.run("ip", "neigh", "add", STATIC, "lladdr", "02:00:00:00:00:99", "dev", "up0")
    host.run("ip", "route", "add", ROUTED, "via", "203.0.113.1")


def world(host: Host) -> tuple:
    return (
        host.run("ip", "-4", "addr", "show").stdout,  # -d: bridge timers tick by themselves
        host.run("ip", "-4", "route", "show", "table", "all").stdout,
        host.nft_text(),
        host.state.read_bytes() if host.state.exists() else b"",
    )


def up(host: Host, door: str, name: str, *args: str) -> tuple[int, str]:
    """``up`` through a door: (0, "") or (the CLI's exit code / the API error's, message)."""
    if door == "cli":
        p = host.fireroute("up", name, *args, check=False)
        if p.returncode:
            one_line_error(p.returncode, p.stderr)
        return p.returncode, p.stderr
    argv = ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", API_UP]
    p = subprocess.run([*argv, str(host.state), name, *args], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    doc = json.loads(p.stdout)
    codes = {"ConflictError": 3, "UsageError": 2}
    return (0, "") if "ok" in doc else (codes.get(doc["error"], 1), doc["message"])


def refused(host: Host, door: str, code: int, name: str, *args: str, says: list[str]) -> None:
    before = world(host)
    rc, msg = up(host, door, name, *args)
    assert rc == code, (args, rc, msg)
    for needle in [*says, f'"{name}"'] if code == 3 else says:
        assert needle in msg, (needle, msg)
    after = world(host)
    if not before[3]:  # a refused first up may leave the new state file, empty
        assert json.loads(host.fireroute("ls", "--json").stdout) == []
        after = (*after[:3], b"")
    assert after == before, args


def other_state(host: Host, *args: str) -> dict:
    """``fireroute up`` with a second state file on the same host."""
    env = {"FIREROUTE_STATE": str(host.state.parent / "b" / "state.db")}
    return json.loads(host.fireroute("up", *args, "--json", env=env).stdout)[0]


DOORS = ["cli", "api"]


@pytest.mark.parametrize("door", DOORS)
def test_clone_address_is_checked_against_the_whole_host(host: Host, door: str):
    lan(host)
    b = other_state(host, "b1", "--tap", "fr-b1", "--pool", "172.17.0.0/16")
    clone = ["--mode", "clone", "--clone-address"]
    for addr, says in (
        ("203.0.113.1", "the host's default router"),
        ("203.0.113.2", 'an address of the host (on "up0")'),
        (NEIGHBOUR, 'a neighbour of the host on "up0"'),
        (STATIC, "MAC 02:00:00:00:00:99"),
        ("198.51.100.9", f"inside the host's route {ROUTED}"),
        (b["guest_ip"], 'vm "b1"'),
    ):
        refused(host, door, 3, "c1", *clone, addr, says=[addr, says])
    for addr in ("127.0.0.5", "169.254.1.1"):
        refused(host, door, 2, "c1", *clone, addr, says=[addr])
    # the positive control: a free address (only the default route covers it) is accepted,
    # routed to the clone's namespace, and check says ok
    assert up(host, door, "c1", *clone, "192.0.2.77") == (0, "")
    route = host.run("ip", "-j", "route", "get", "192.0.2.77").stdout
    assert json.loads(route)[0]["dev"].startswith("fr-")
    assert json.loads(host.fireroute("check", "--json").stdout)["ok"]


def guest_on(host: Host, rec: dict, bridge: str) -> str:
    """A namespace in the VM's place: its tap becomes a veth with the guest's MAC and
    address, on the bridge."""
    ns = f"{host.ns}-g"
    sh("ip", "netns", "add", ns)
    tap = rec["host_dev"]
    host.run("ip", "link", "del", tap)
    host.run("ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
    host.run("ip", "link", "set", tap, "master", bridge, "up")
    sh("ip", "-n", ns, "link", "set", "eth0", "address", rec["mac"], "up")
    sh("ip", "-n", ns, "addr", "add", f"{rec['guest_ip']}/{rec['prefix']}", "dev", "eth0")
    return ns


@pytest.fixture
def lan_bridge(host: Host) -> Iterator[str]:
    """An adopted LAN bridge: the host on it (10.50.0.1/24), a machine on it (10.50.0.7) the
    host has met, and a host route for part of its subnet that goes elsewhere."""
    ns = f"{host.ns}-lan"
    sh("ip", "netns", "add", ns)
    host.run("ip", "link", "add", "brl", "type", "bridge")
    host.run("ip", "addr", "add", "10.50.0.1/24", "dev", "brl")
    host.run("ip", "link", "set", "brl", "up")
    host.run("ip", "link", "add", "lanp", "master", "brl", "up", "type", "veth", "peer", "name",
             "eth0", "netns", ns)  # fmt: skip
    sh("ip", "-n", ns, "addr", "add", "10.50.0.7/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    ping(host.ns, "10.50.0.7")
    host.run("ip", "route", "add", "10.50.0.192/26", "via", "203.0.113.1")
    try:
        yield "brl"
    finally:
        for name in (ns, f"{host.ns}-g"):
            sh("ip", "netns", "del", name, check=False)


@pytest.mark.parametrize("door", DOORS)
def test_bridge_guest_is_checked_against_the_lan_and_the_host(
    host: Host, lan_bridge: str, door: str
):
    br = ["--mode", "bridge", "--bridge", lan_bridge, "--guest-ip"]
    b = other_state(host, "b1", *br, "10.50.0.20/24")
    # a port joining the bridge may change its MAC, which flushes its neighbour entries:
    # the host meets the machine on the LAN again
    ping(host.ns, "10.50.0.7")
    for addr, says in (
        ("10.50.0.7", f'a neighbour of the host on "{lan_bridge}"'),
        ("10.50.0.200", "inside the host's route 10.50.0.192/26"),
        ("10.50.0.20", 'vm "b1" of another state file'),
    ):
        refused(host, door, 3, "g1", *br, f"{addr}/24", says=[addr, says])
    assert b["guest_ip"] == "10.50.0.20"
    # an unaddressed bridge: the guest's link is the uplink's LAN, named by its gateway
    plain = ["--mode", "bridge", "--bridge", "brp", "--gateway", "203.0.113.254", "--guest-ip"]
    refused(host, door, 3, "g1", *plain, "203.0.113.1/24", says=["the host's default router"])
    refused(host, door, 3, "g1", *plain, "203.0.113.2/24", says=["an address of the host"])
    # a range passes over what collides only when asked to (--skip-conflicts)
    ranged = ["--mode", "bridge", "--bridge", lan_bridge, "--range", "10.50.0.7-10.50.0.8"]
    refused(host, door, 3, "g1", *ranged, says=["10.50.0.7", "neighbour"])
    assert up(host, door, "g1", *ranged, "--skip-conflicts") == (0, "")
    assert (
        json.loads(host.fireroute("show", "g1", "--format", "json").stdout)["guest_ip"]
        == "10.50.0.8"
    )
    host.fireroute("down", "g1")

    # the positive control: a free address of the LAN is accepted and the guest reaches the
    # host and the machine on the LAN through the bridge
    assert up(host, door, "g1", *br, "10.50.0.30/24") == (0, "")
    rec = json.loads(host.fireroute("show", "g1", "--format", "json").stdout)
    ns = guest_on(host, rec, lan_bridge)
    ping(ns, "10.50.0.1")
    ping(ns, "10.50.0.7")
    assert host.run("ip", "neigh", "show", "10.50.0.30", "dev", lan_bridge).stdout.strip()
    # the same guest coming back at its address is not its own neighbour
    host.fireroute("down", "g1")
    assert up(host, door, "g1", *br, "10.50.0.30/24") == (0, "")


def ipam(data: Path, subnet: str, start: str, gateway: str) -> dict:
    """host-local, made to hand out exactly ``start`` (with ``gateway``)."""
    rng = {"subnet": subnet, "rangeStart": start, "rangeEnd": start, "gateway": gateway}
    return {"type": "host-local", "ranges": [[rng]], "dataDir": str(data)}


@pytest.fixture
def rt(host: Host) -> Iterator[Runtime]:
    r = Runtime(host)
    try:
        yield r
    finally:
        r.close()


@pytest.mark.parametrize(
    ("subnet", "addr", "gateway", "code", "says"),
    [
        ("203.0.113.0/24", "203.0.113.1", "203.0.113.254", 100, "the host's default router"),
        ("203.0.113.0/24", "203.0.113.2", "203.0.113.254", 100, "an address of the host"),
        ("203.0.113.0/24", NEIGHBOUR, "203.0.113.254", 100, "a neighbour of the host"),
        ("198.51.100.0/24", "198.51.100.9", "198.51.100.1", 100, "inside the host's route"),
        ("172.17.0.0/24", "172.17.0.2", "172.17.0.1", 100, 'vm "b1"'),
        ("127.0.0.0/8", "127.0.0.5", "127.0.0.1", 7, "loopback"),
        # a free guest address, but the gateway is a neighbour's: the host would take it
        ("192.0.2.0/24", "192.0.2.50", STATIC, 100, f"IPAM gateway {STATIC}"),
    ],
)
def test_cni_ipam_address_is_checked_and_released(
    host: Host, rt: Runtime, tmp_path: Path, subnet, addr, gateway, code, says
):
    assert Path(HOST_LOCAL).exists(), "containernetworking-plugins is not installed"
    lan(host)
    other_state(host, "b1", "--tap", "fr-b1", "--pool", "172.17.0.0/16")  # 172.17.0.2
    data = tmp_path / "ipam"
    conf = rt.config(ipam=ipam(data, subnet, addr, gateway))
    ns = rt.netns("c1")
    before, theirs = world(host), leftovers(host)  # B's objects
    bad = rt.call("ADD", conf=conf, container="c1", netns=ns)
    assert bad.rc != 0 and bad.doc["code"] == code, bad.doc
    assert addr in bad.doc["details"] or gateway in bad.doc["details"], bad.doc
    assert says in bad.doc["details"], bad.doc
    assert leases(data) == []  # the allocation was released
    assert set(rt.ns_links(ns)) == {"lo"} and state_vms(host.state) == []
    assert leftovers(host) == theirs
    after = world(host)
    assert after[:3] == before[:3]  # the state file: no vm in it (checked above)

    # the positive control: an address only the default route covers, through the same
    # plugin and IPAM plugin, is attached, routed to its veth and checks ok
    good = rt.config(ipam=ipam(tmp_path / "ok", "10.77.0.0/24", "10.77.0.5", "10.77.0.1"))
    res = rt.add("c1", ns, conf=good)
    assert res["ips"][-1]["address"] == "10.77.0.5/24"
    assert leases(tmp_path / "ok") == ["10.77.0.5"]
    route = json.loads(host.run("ip", "-j", "route", "get", "10.77.0.5").stdout)[0]
    assert route["dev"] == res["interfaces"][0]["name"]
    assert rt.call("CHECK", conf=good, container="c1", netns=ns).rc == 0
    assert rt.call("DEL", conf=good, container="c1", netns=ns).rc == 0


AGREE = """
import json, sys
from ipaddress import IPv4Address
from fireroute.kernel import lookup
from fireroute.kernel.run import run

def scripted(argv, stdin=None, **kw):  # not run itself: lookup reads with ip -batch
    return run(argv, stdin, **kw)

out = []
for a in sys.argv[1:]:
    got = []
    for runner in (run, scripted):
        f = lookup.read(IPv4Address(a), ["up0", "brl"], "fireroute:", runner)
        r = f.route or {}
        route = (r.get("dst"), r.get("dev"), r.get("type", "unicast"))
        got.append([route, f.router, f.aliases, f.neighbour])
    out.append(got)
print(json.dumps(out))
"""


def test_the_in_process_reads_agree_with_ip(host: Host, lan_bridge: str):
    """kernel/lookup.py over rtnetlink, and by ``ip -batch`` (where netlink cannot be used),
    see the same: routes, the router, aliases, neighbours (real and static)."""
    lan(host)
    host.fireroute("up", "n1")  # a link of ours, with its alias
    addrs = ["203.0.113.1", "203.0.113.2", NEIGHBOUR, STATIC, "192.0.2.77", "127.0.0.5"]
    addrs += ["10.50.0.7", "10.50.0.30", "198.51.100.9", "172.16.0.2", "172.16.0.1"]
    argv = ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", AGREE, *addrs]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    got = dict(zip(addrs, json.loads(p.stdout), strict=True))
    for addr, (netlink, by_ip) in got.items():
        assert netlink == by_ip, addr
    assert got[NEIGHBOUR][0][3][0] == "up0" and got[STATIC][0][3] == ["up0", "02:00:00:00:00:99"]
    assert got["10.50.0.7"][0][3][0] == lan_bridge and got["10.50.0.30"][0][3] is None
    assert got["172.16.0.2"][0][2]["fr-n1"].startswith("fireroute:")
    assert got["203.0.113.2"][0][0] == ["203.0.113.2", "up0", "local"]
