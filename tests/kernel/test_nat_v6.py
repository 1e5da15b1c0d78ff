"""A NAT VM with IPv6 (issue 24 step 5) up and down in a throwaway "host" namespace: what the
kernel then holds, and a guest behind the tap reaching the "internet" namespace over IPv6,
masqueraded; down leaves nothing of it and IPv6 forwarding as it was. The control: a VM
without IPv6 beside it is up and down as before (IPv6 off on its tap, no ip6 table)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from ipaddress import IPv6Network

import pytest

from fireroute.addressing import gateway6_text
from tests.conftest import Host, sh

pytestmark = pytest.mark.privileged

POOL6 = "fd3c:9a1e:52b0::/48"
UPLINK6, FAR6 = "2001:db8:ffff::2", "2001:db8:ffff::1"
"""the sandbox uplink's IPv6 address and the "internet" side's (given here: it has none)"""
PORT = 8087
SERVER = f"""
import socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", {PORT})); s.listen(4); print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall((peer[0] + "\\n").encode()); c.close()
"""
CLIENT = f"""
import socket, sys
s = socket.socket(socket.AF_INET6); s.settimeout(3)
try:
    s.connect((sys.argv[1], {PORT}))
    print(s.makefile().readline().strip())
except OSError as e:
    print("FAIL", e); sys.exit(1)
"""
UP = """
import sys, fireroute
h = fireroute.Host(sys.argv[1], in_process=sys.argv[2] == "inproc")
h.up(sys.argv[3], **({"ipv6": True, "pool6": sys.argv[4]} if sys.argv[4] else {}))
if sys.argv[5:]:
    h.down(*sys.argv[5:])
"""


def up(host: Host, name: str, ipv6: bool = True, executor: str = "process", *down: str) -> None:
    """``up`` through the Python API (then ``down`` of ``down``, if any), in the host
    namespace, with the process or the in-process executor."""
    args = [str(host.state), executor, name, POOL6 if ipv6 else "", *down]
    p = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", UP, *args],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr


def hardened(host: Host) -> None:
    """New links with IPv6 off, as on a hardened host: the tap's address is refused until its
    sysctl is written (plan F11), so the order of up's steps is what is tested."""
    host.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")


def sysctl(host: Host, path: str) -> str:
    return host.run("cat", f"/proc/sys/{path}").stdout.strip()


def addrs6(host: Host, dev: str) -> list[tuple[str, bool]]:
    """The link's IPv6 addresses (and whether each is nodad)."""
    link = host.links()[dev]
    return [
        (f"{a['local']}/{a['prefixlen']}", bool(a.get("nodad")))
        for a in link.get("addr_info", [])
        if a.get("family") == "inet6"
    ]


def routes6(host: Host, dev: str) -> list[str]:
    out = host.run("ip", "-6", "-j", "route", "show", "dev", dev).stdout
    return [r["dst"] for r in json.loads(out or "[]") if r.get("protocol") != "kernel"]


def tables(host: Host) -> set[tuple[str, str]]:
    return {(i["table"]["family"], i["table"]["name"]) for i in host.nft() if "table" in i}


def elements6(host: Host, name: str) -> list:
    for item in host.nft():
        s = item.get("set")
        if s and s["family"] == "ip6" and s["name"] == name:
            return [e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
                    for e in s.get("elem", [])]  # fmt: skip
    return []


def test_a_v6_vm_up_reaches_out_masqueraded_and_down_leaves_nothing(host: Host):
    before6 = sysctl(host, "net/ipv6/conf/all/forwarding")
    assert before6 == "0"
    hardened(host)
    up(host, "v6a")
    tap = "fr-v6a"
    (block,) = routes6(host, tap)
    gateway = f"{gateway6_text(IPv6Network(block))}/64"  # its own, and no other beside it
    assert gateway.startswith("fe80::1:") and addrs6(host, tap) == [(gateway, True)]
    assert block.startswith("fd3c:9a1e:52b0:") and block.endswith("::/64")
    prefix = block.removesuffix("/64")
    assert sysctl(host, f"net/ipv6/conf/{tap}/disable_ipv6") == "0"
    assert sysctl(host, f"net/ipv6/conf/{tap}/addr_gen_mode") == "1"
    assert sysctl(host, "net/ipv6/conf/all/forwarding") == "1"
    assert ("ip6", "firecracker") in tables(host) and ("ip", "firecracker") in tables(host)
    assert elements6(host, "taps") == [tap]
    assert elements6(host, "vms") == [{"concat": [tap, prefix]}]
    assert elements6(host, "masq") == [{"concat": [prefix, "up0"]}]

    # the control beside it: a VM without IPv6 has IPv6 off and nothing in the ip6 table
    up(host, "v4b", ipv6=False)
    assert sysctl(host, "net/ipv6/conf/fr-v4b/disable_ipv6") == "1"
    assert addrs6(host, "fr-v4b") == [] and elements6(host, "taps") == [tap]

    _guest_reaches_out(host, tap, prefix, gateway.removesuffix("/64"))

    host.fireroute("down", "v6a")
    assert tap not in host.links()
    assert ("ip6", "firecracker") not in tables(host)  # the last v6 VM: its table goes
    assert sysctl(host, "net/ipv6/conf/all/forwarding") == before6  # IPv6 forwarding back
    assert ("ip", "firecracker") in tables(host) and host.forwarding() == "1"  # v4b stays
    assert prefix not in host.run("ip", "-6", "route", "show").stdout  # (its route went)
    host.fireroute("down", "v4b")
    assert tables(host) == set() and host.forwarding() == "0"


def _guest_reaches_out(host: Host, tap: str, prefix: str, gateway: str) -> None:
    """A guest namespace on a veth standing in for the tap (a tap carries nothing without its
    VMM), with what up gave the tap put on it again: its ::2 in the VM's /64, default via
    its ``gateway``, reaches a server in the "internet" namespace, which sees the uplink's
    address."""
    guest = f"frg6-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", guest)
    inet = ["ip", "netns", "exec", host.inet]
    sh(*inet, "ip", "addr", "add", f"{FAR6}/64", "dev", "down0", "nodad")
    host.run("ip", "addr", "add", f"{UPLINK6}/64", "dev", "up0", "nodad")
    host.run("ip", "-6", "route", "add", "default", "via", FAR6, "dev", "up0")
    server = subprocess.Popen([*inet, sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        host.sh(
            f"ip link del {tap} && ip link add {tap} type veth peer name eth0 netns {guest} && "
            f"sysctl -qw net/ipv6/conf/{tap}/disable_ipv6=0 net/ipv6/conf/{tap}/addr_gen_mode=1 && "
            f"ip link set {tap} up && "
            f"ip addr add {gateway}/64 dev {tap} nodad && ip -6 route add {prefix}/64 dev {tap}"
        )
        g = ["ip", "-n", guest]
        sh(*g, "link", "set", "eth0", "up")
        sh(*g, "addr", "add", f"{prefix}2/64", "dev", "eth0", "nodad")
        sh(*g, "-6", "route", "add", "default", "via", gateway, "dev", "eth0")
        seen = sh("ip", "netns", "exec", guest, sys.executable, "-c", CLIENT, FAR6, check=False)
        assert seen.stdout.strip() == UPLINK6  # out, seen as the uplink's address (masqueraded)
        # without its masq element the guest's own address leaves, and no reply comes back
        listed = host.run("nft", "list", "set", "ip6", "firecracker", "masq").stdout
        tag = listed.split('comment "', 1)[1].split('"', 1)[0]  # (its owner: put back as it was)
        elem = f'{{ {prefix} . "up0" comment "{tag}" }}'
        host.run("nft", "delete", "element", "ip6", "firecracker", "masq", elem)
        seen = sh("ip", "netns", "exec", guest, sys.executable, "-c", CLIENT, FAR6, check=False)
        assert seen.stdout.startswith("FAIL")
        host.run("nft", "add", "element", "ip6", "firecracker", "masq", elem)
    finally:
        server.kill()
        server.wait()
        sh("ip", "netns", "del", guest, check=False)


def test_a_v4_only_vm_brings_no_ipv6(host: Host):
    """The control: a VM without IPv6 is up and down as before: IPv6 off on its tap, no ip6
    table, IPv6 forwarding never written."""
    up(host, "v4", ipv6=False)
    assert tables(host) == {("ip", "firecracker")}
    assert sysctl(host, "net/ipv6/conf/fr-v4/disable_ipv6") == "1" and addrs6(host, "fr-v4") == []
    assert sysctl(host, "net/ipv6/conf/all/forwarding") == "0" and host.forwarding() == "1"
    host.fireroute("down", "v4")
    assert tables(host) == set() and host.forwarding() == "0"


def cli_up(host: Host, name: str, check: bool = True) -> subprocess.CompletedProcess:
    return host.fireroute("up", name, "--ipv6", "--pool6", POOL6, check=check)


def test_a_left_over_ip6_table_of_ours_is_taken_a_foreign_one_refused(host: Host):
    """The ip6 table is made exclusively: one of ours left over (its comment) is found on
    AlreadyExists and added to; one that is not ours is refused in one line, and the up
    leaves nothing (no tap, no ip table, no row)."""
    host.run("nft", "add", "table", "ip6", "firecracker", '{ comment "fireroute"; }')
    cli_up(host, "a")
    assert (
        elements6(host, "taps") == ["fr-a"]
        and "chain forward" in host.run("nft", "list", "table", "ip6", "firecracker").stdout
    )  # (declared whole)
    host.fireroute("down", "a")
    assert tables(host) == set()
    host.run("nft", "add", "table", "ip6", "firecracker")  # someone else's
    p = cli_up(host, "b", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "firecracker" in p.stderr, p.stderr
    assert "fr-b" not in host.links() and tables(host) == {("ip6", "firecracker")}
    assert "b" not in host.fireroute("ls").stdout.split()
    assert sysctl(host, "net/ipv6/conf/all/forwarding") == "0" and host.forwarding() == "0"


def test_the_in_process_executor_does_the_same(host: Host):
    """The in-process executor hands what it cannot encode (the v6 address and route, a
    transaction over two tables) to ip and nft: the same host after up, nothing after down."""
    hardened(host)
    up(host, "a", True, "inproc")
    gateway = "fe80::1:9a1e:52b0:0/64"  # its own: the pool's first block's
    assert addrs6(host, "fr-a") == [(gateway, True)] and routes6(host, "fr-a")
    assert elements6(host, "taps") == ["fr-a"]
    assert sysctl(host, "net/ipv6/conf/all/forwarding") == "1"
    up(host, "b", True, "inproc", "a", "b")  # (b up, then both down, in-process)
    assert tables(host) == set() and "fr-a" not in host.links()
    assert sysctl(host, "net/ipv6/conf/all/forwarding") == "0" and host.forwarding() == "0"


def test_a_dry_run_prints_the_v6_steps_and_changes_nothing(host: Host):
    p = host.fireroute("up", "a", "--ipv6", "--pool6", POOL6, "--dry-run")
    for line in (
        "ip address add fe80::1:9a1e:52b0:0/64 dev fr-a nodad",
        "ip route add fd3c:9a1e:52b0::/64 dev fr-a",
        "sysctl -w net.ipv6.conf.all.forwarding=1",
        'create table ip6 firecracker { comment "fireroute"; }',
    ):
        assert line in p.stdout.splitlines(), p.stdout
    assert tables(host) == set() and "fr-a" not in host.links()
    assert sysctl(host, "net/ipv6/conf/all/forwarding") == "0"


@pytest.mark.parametrize("at", [2, 3, 4])
def test_a_failed_v6_up_is_undone_whole(host: Host, at: int):
    """A fault after the nft transaction (2; it runs beside the tap's ip), after the sysctls
    (3: the tap's, both forwardings), after the tap's IPv6 address and route (4, the last
    process): each undone, IPv6 forwarding back; the control: no fault."""
    env = {"FIREROUTE_FAULT": f"fail@{at}"}
    p = host.fireroute("up", "a", "--ipv6", "--pool6", POOL6, check=False, env=env)
    assert p.returncode == 1 and "injected fault" in p.stderr, p.stderr
    assert "fr-a" not in host.links() and tables(host) == set()
    assert POOL6.split("::")[0] not in host.run("ip", "-6", "route", "show").stdout
    assert sysctl(host, "net/ipv6/conf/all/forwarding") == "0" and host.forwarding() == "0"
    assert host.fireroute("ls", "--json").stdout.strip() == "[]"
    cli_up(host, "a")  # the control
    assert ("ip6", "firecracker") in tables(host)
