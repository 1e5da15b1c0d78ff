"""Clones with IPv6 (issue 24 step 14, docs/ipv6-plan.md 1.11) with real packets: every clone's
guest has the same IPv6 address, in a namespace of its own; NAT66 in each namespace maps it to
the clone's own address (its /64's ``::2``), which the host routes over the clone's veth. A
guest is wired to the clone's tap inside the clone's namespace (tests/kernel/tapwire.py: the
tap keeps its carrier, addresses, route and sysctls) and configured as the guest script says.

With a global pool (routed to the host: no NAT66 on the host) the internet sees each clone
under its own address; with the unique local pool, under the uplink's. Isolation is a NAT
tap's: one clone's guest reaches no other clone, beside the control that the host reaches both
and that the same guests reach the internet. Also: a clone without IPv6 beside one with it,
teardown, gc, and ``plan`` printing exactly what ``up`` does."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.tapwire import Wired
from tests.kernel.test_isolation6 import INTERNET6, UPLINK6, Lab

pytestmark = pytest.mark.privileged

POOL6 = "2001:db8:c000::/48"
"""a global pool (not fc00::/7): routed, not masqueraded, by the host"""
GUEST6 = "fd00:c10::2"


class Clones(Lab):
    """The IPv6 lab of test_isolation6 (the uplink and the internet speak IPv6), with clone
    guests: each wired to the tap in its clone's namespace."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.wires: list[Wired] = []
        sh("ip", "-n", host.inet, "-6", "route", "add", POOL6, "via", UPLINK6, "dev", "down0")

    def clone(self, name: str, *args: str) -> tuple[str, dict]:
        """fireroute up NAME --mode clone --ipv6, then a guest wired to the clone's tap,
        configured by the guest script's IPv6 lines: its namespace and the VM's record."""
        rec = self.up(name, "--mode", "clone", "--ipv6", *args)
        wired = Wired(rec["netns"], label=f"{self.host.ns}-{name}")
        self.wires.append(wired)
        ns = wired.guest(rec["tap"], rec["mac"])
        script = self.host.fireroute("show", name, "--format", "guest-script").stdout
        for line in script.splitlines():
            if line.startswith("ip -6 "):
                sh("ip", "-n", ns, *line.split()[1:])
        return ns, rec

    def close(self) -> None:
        for w in self.wires:
            w.close()
        super().close()


@pytest.fixture
def clones(host: Host) -> Iterator[Clones]:
    lab = Clones(host)
    try:
        yield lab
    finally:
        lab.close()


def clone_address(rec: dict) -> str:
    """The clone's IPv6 address (its block's ``::2``), as the record gives it."""
    assert rec["clone_address6"] == rec["ipv6"]["block"].split("/")[0] + "2", rec
    return rec["clone_address6"]


def test_two_clones_one_guest_address_leave_under_two_clone_addresses(clones: Clones):
    g1, c1 = clones.clone("c1", "--pool6", POOL6)
    g2, c2 = clones.clone("c2", "--pool6", POOL6)
    for rec in (c1, c2):  # the same guest, address and tap in every clone
        assert rec["ipv6"]["address"] == GUEST6 and rec["ipv6"]["prefix"] == 64
        assert rec["ipv6"]["gateway"] == "fe80::1" and rec["tap"] == "vmtap0"
    assert c1["mac"] == c2["mac"] and c1["netns"] != c2["netns"]
    a1, a2 = clone_address(c1), clone_address(c2)
    assert a1 != a2
    clones.serve(clones.host.inet, f"[{INTERNET6}]:8080")
    assert clones.connect(g1, INTERNET6, 8080) == f"hello {a1}"
    assert clones.connect(g2, INTERNET6, 8080) == f"hello {a2}"
    # the host reaches each guest at its clone's address, though both guests have one address
    for g, a in ((g1, a1), (g2, a2)):
        clones.serve(g, "[::]:9000")
        argv = ["ip", "netns", "exec", clones.host.ns, sys.executable, "-c", CONNECT, a, "9000"]
        assert sh(*argv, check=False).stdout.strip().startswith("hello ")
    # isolation as for a NAT tap: no clone's guest reaches another clone (refused beside the
    # control above: the host reaches the same server at the same address)
    assert clones.connect(g1, a2, 9000).startswith("FAIL")
    assert clones.connect(g2, a1, 9000).startswith("FAIL")


CONNECT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
print(s.makefile().readline().strip())
"""


def test_a_clone_of_the_unique_local_pool_leaves_masqueraded(clones: Clones):
    """The default pool (fc00::/7) is masqueraded out of the uplink's address, after the
    namespace's NAT66 (the host sees the clone address, the internet the uplink's)."""
    g, rec = clones.clone("c")
    assert rec["ipv6"]["block"].startswith("fd")
    clones.serve(clones.host.inet, f"[{INTERNET6}]:8080")
    assert clones.connect(g, INTERNET6, 8080) == f"hello {UPLINK6}"
    masq = clones.host.set_elements("firecracker", "masq")  # (the ip table's: IPv4 too)
    assert {"concat": ["10.200.0.2", "up0"]} in masq
    listed = clones.host.run("nft", "-j", "list", "set", "ip6", "firecracker", "masq").stdout
    v6 = json.loads(listed)
    elems = [e for x in v6["nftables"] if "set" in x for e in x["set"].get("elem", [])]
    assert len(elems) == 1 and clone_address(rec)[:-1] in json.dumps(elems)


def test_a_v4_clone_keeps_ipv6_unrouted(clones: Clones):
    """Beside a clone with IPv6, one without gets no IPv6 object (no address, route,
    forwarding or table for IPv6 in its namespace: it routes no IPv6), and check is clean; the
    control: the clone with IPv6 beside it reaches the internet."""
    g6, _ = clones.clone("six", "--pool6", POOL6)
    rec = clones.up("four", "--mode", "clone")
    assert rec["ipv6"] is None and "clone_address6" not in rec
    ns = rec["netns"]
    routes = sh("ip", "-n", ns, "-6", "route", "show").stdout.splitlines()
    assert [r for r in routes if not r.startswith("fe80::/64 ")] == []  # (the kernel's)
    forwarding = sh("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv6.conf.all.forwarding")
    assert forwarding.stdout.strip() == "0"
    assert "ip6" not in sh("ip", "netns", "exec", ns, "nft", "list", "tables").stdout
    clones.serve(clones.host.inet, f"[{INTERNET6}]:8080")
    assert clones.connect(g6, INTERNET6, 8080).startswith("hello 2001:db8:c000:")
    p = clones.host.fireroute("check", "--json", check=False)
    assert p.returncode == 0, p.stdout


def test_teardown_takes_the_clones_ipv6_with_it(clones: Clones):
    rec = clones.up("c", "--mode", "clone", "--ipv6")
    host = clones.host
    assert "table ip6 firecracker" in host.nft_text()
    host.fireroute("teardown")
    assert "firecracker" not in host.nft_text() and "fr-c" not in host.links()
    assert host.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "0"
    assert rec["netns"] not in sh("ip", "netns", "list").stdout.split()


def test_gc_takes_a_forgotten_clones_ipv6_with_it(clones: Clones):
    """gc of a clone with IPv6 whose lease is forgotten (a VM without IPv6 stays): its
    namespace, host end, ip6 elements, the ip6 table and IPv6 forwarding go; check is clean."""
    import sqlite3

    host = clones.host
    host.fireroute("up", "keep")
    rec = clones.up("lost", "--mode", "clone", "--ipv6")
    assert "table ip6 firecracker" in host.nft_text()
    db = sqlite3.connect(host.state)
    db.execute("DELETE FROM vms WHERE name = 'lost'")
    db.commit()
    db.close()
    host.fireroute("gc")
    assert rec["netns"] not in sh("ip", "netns", "list").stdout.split()
    assert "fr-lost" not in host.links() and "fr-keep" in host.links()
    assert "table ip6 firecracker" not in host.nft_text()
    assert host.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "0"
    p = host.fireroute("check", "--json", check=False)
    assert p.returncode == 0 and json.loads(p.stdout)["vms"] == {"keep": []}, p.stdout


def picture(host: Host, ns: str | None = None) -> tuple:
    """What the host and the clone namespace ``ns`` (if given) hold: addresses of both
    families, routes, the rulesets without counters, the sysctls fireroute writes."""
    import re

    def addrs(*where: str) -> dict:
        docs = json.loads(sh("ip", *where, "-j", "-d", "addr", "show").stdout)
        return {
            d["ifname"]: (
                sorted(f"{a['local']}/{a['prefixlen']}" for a in d.get("addr_info", [])),
                d.get("ifalias"),
                "UP" in d["flags"],
            )
            for d in docs
        }

    def sysctls(*where: str, keys: list[str]) -> list[str]:
        argv = ["ip", "netns", "exec", *where, "sysctl", "-e", *keys]
        return sh(*argv, check=False).stdout.splitlines()

    six = ["net.ipv6.conf.all.forwarding", "net.ipv4.ip_forward"]
    devs = [f"net/ipv6/conf/{d}/{k}" for d in ("vmtap0", "veth0", "fr-c")
            for k in ("disable_ipv6", "addr_gen_mode")]  # fmt: skip
    out = []
    for where in (host.ns, *([ns] if ns else [])):
        ruleset = sh("ip", "netns", "exec", where, "nft", "list", "ruleset", check=False).stdout
        out += [
            addrs("-n", where),
            sh("ip", "-n", where, "route", "show").stdout,
            sh("ip", "-n", where, "-6", "route", "show").stdout,
            re.sub(r"counter packets \d+ bytes \d+", "counter", ruleset),
            sysctls(where, keys=six + devs),
        ]
    return tuple(out)


def test_the_plan_of_a_clone_with_ipv6_is_what_up_does(host: Host):
    """``plan`` of a clone with IPv6 (beside one that is up) changes nothing, and run by hand
    as a shell script leaves the host and the namespace as ``up`` leaves them."""
    host.fireroute("up", "first", "--mode", "clone", "--ipv6")
    before, state = picture(host), host.state.read_bytes()
    script = host.fireroute("plan", "c", "--mode", "clone", "--ipv6").stdout
    assert picture(host) == before and host.state.read_bytes() == state  # nothing changed
    assert "ip6 fireroute_clone" in script, script
    rec = json.loads(host.fireroute("up", "c", "--mode", "clone", "--ipv6", "--json").stdout)[0]
    by_up = picture(host, rec["netns"])
    assert by_up[:5] != before  # the positive control: up did change the host
    host.fireroute("down", "c")
    assert picture(host) == before
    host.sh(script)  # the printed plan, typed by a person
    assert picture(host, rec["netns"]) == by_up
