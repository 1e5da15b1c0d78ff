"""Blocks smaller than a /64 (``--prefix6``) and proxy NDP (``--proxy-ndp``), with real packets
through fireroute's own tap (tests/kernel/tapwire.py, as test_isolation6.py) and an "upstream
router" (the internet namespace) on the uplink's on-link /64 (docs/ipv6.md, proxy NDP):

- a sub-/64 guest sends from its own ``::2`` only: its neighbour's block, in the same /64, and
  another address of its own block are dropped (the /64 lookup alone would pass them), beside
  the control that its ``::2`` (and the neighbour's from the neighbour) arrives unchanged;
- with ``--proxy-ndp`` the upstream's neighbour solicitation for the guest's address is
  answered with the host's uplink MAC and the guest's connection (no NAT: a global pool) is
  answered; without it (the control, same pool) the upstream finds no neighbour and the
  guest's connection gets no answer; the last proxy entry's ``down`` gives the uplink its
  ``proxy_ndp`` back;
- ``check`` names a deleted proxy entry and proxy_ndp switched off, ``restore`` heals each,
  a second ``restore`` has nothing to do.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_drift import report
from tests.kernel.test_isolation import heard, sink
from tests.kernel.test_isolation6 import INTERNET6, UDP_SEND, Lab

pytestmark = pytest.mark.privileged

ROUTED = "2001:db8:200::/64"
"""a global /64 the upstream routes to the host (via the uplink's address)"""
ONLINK = "2001:db8:100:0:1::/80"
"""a part of the uplink's own on-link /64 (2001:db8:100::/64): reached by proxy NDP only"""


@pytest.fixture
def lab(host: Host) -> Iterator[Lab]:
    lab = Lab(host)
    sh("ip", "-n", host.inet, "-6", "route", "add", ROUTED, "via", "2001:db8:100::2")
    try:
        yield lab
    finally:
        lab.close()


def guest(lab: Lab, name: str, *args: str) -> tuple[str, dict]:
    """``up NAME --ipv6 ARGS``, a guest wired to its tap with the address and prefix length
    ``show --json`` gives (no SLAAC below a /64)."""
    rec = lab.up(name, "--ipv6", *args)
    ns = lab.wired.guest(rec["tap"], rec["mac"])
    six = rec["ipv6"]
    sh("ip", "-n", ns, "-6", "addr", "add", f"{six['address']}/{six['prefix']}", "dev", "eth0",
       "nodad")  # fmt: skip
    sh("ip", "-n", ns, "-6", "route", "add", "default", "via", six["gateway"], "dev", "eth0")
    return ns, rec


def sent(lab: Lab, ns: str, *sources: str) -> list[str]:
    """What the internet side receives of datagrams the guest in ``ns`` sends from each of
    ``sources`` (``payload@peer``: a global pool leaves unchanged, so peer is the source); the
    last source must get through: its datagram ends the wait."""
    got = sink(lab.host.inet, "9999", sources[-1], "::")
    sh("ip", "netns", "exec", ns, sys.executable, "-c", UDP_SEND, INTERNET6, "9999", *sources)
    return heard(got)


def test_a_sub64_guest_sends_from_its_own_address_only(lab: Lab):
    a_ns, a = guest(lab, "a", "--pool6", ROUTED, "--prefix6", "96")
    b_ns, b = guest(lab, "b", "--pool6", ROUTED, "--prefix6", "96")
    own, other = a["ipv6"]["address"], b["ipv6"]["address"]
    assert (own, other) == ("2001:db8:200::2", "2001:db8:200::1:0:2")  # blocks 0 and 1
    assert a["ipv6"]["prefix"] == 96 and a["ipv6"]["block"] == "2001:db8:200::/96"
    beside = "2001:db8:200::3"  # (its own block, not its address)
    for addr in (other, beside):  # the forged sources, configured in A's guest
        sh("ip", "-n", a_ns, "-6", "addr", "add", f"{addr}/128", "dev", "eth0", "nodad")
    seen = sent(lab, a_ns, other, beside, own)
    assert seen == [f"{own}@{own}"], seen  # the control: its own address, unchanged
    assert sent(lab, b_ns, other) == [f"{other}@{other}"]  # B's own: B's to send
    drops = lab.host.run("nft", "list", "chain", "ip6", "firecracker", "forward").stdout
    line = next(x for x in drops.splitlines() if "@vms128" in x)
    assert "packets 6 " in line, drops  # (3 datagrams of each forged source)


def upstream_neighbour(lab: Lab, addr: str) -> dict:
    """The upstream's neighbour entry for ``addr`` on its side of the uplink ({}: none)."""
    out = sh("ip", "-n", lab.host.inet, "-j", "-6", "neigh", "show", addr, "dev", "down0")
    return next(iter(json.loads(out.stdout or "[]")), {})


POKE = """
import socket, sys
socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"poke", (sys.argv[1], 9))
"""


def solicit(lab: Lab, addr: str) -> dict:
    """The upstream sends a datagram to ``addr`` (its neighbour solicitation first: the
    address is on its link) and waits up to 3 s for the entry to be resolved; its entry then."""
    sh("ip", "netns", "exec", lab.host.inet, sys.executable, "-c", POKE, addr)
    deadline = time.monotonic() + 3
    while "lladdr" not in (entry := upstream_neighbour(lab, addr)):
        if time.monotonic() > deadline:
            return entry
        time.sleep(0.1)
    return entry


def proxy_ndp(host: Host) -> str:
    return host.run("sysctl", "-n", "net.ipv6.conf.up0.proxy_ndp").stdout.strip()


def test_proxy_ndp_answers_the_upstream_for_the_guest_and_its_traffic_returns(lab: Lab):
    host = lab.host
    assert proxy_ndp(host) == "0"
    lab.serve(host.inet, f"[{INTERNET6}]:8080")
    a_ns, a = guest(lab, "a", "--pool6", ONLINK, "--prefix6", "96", "--proxy-ndp")
    b_ns, b = guest(lab, "b", "--pool6", ONLINK, "--prefix6", "96")  # the control: no proxy
    own, other = a["ipv6"]["address"], b["ipv6"]["address"]
    assert (own, other) == ("2001:db8:100:0:1::2", "2001:db8:100:0:1:1:0:2")
    assert proxy_ndp(host) == "1"
    mac = json.loads(host.run("ip", "-j", "link", "show", "up0").stdout)[0]["address"]
    entry = solicit(lab, own)
    assert entry.get("lladdr") == mac, entry  # the host's advertisement for the guest
    assert "lladdr" not in solicit(lab, other)  # no one answers for B
    assert lab.connect(a_ns, INTERNET6, 8080) == f"hello {own}"  # (routed: its own address)
    assert lab.connect(b_ns, INTERNET6, 8080).startswith("FAIL")  # the reply finds no B
    host.fireroute("down", "b")
    assert proxy_ndp(host) == "1"  # (A's entry stays)
    host.fireroute("down", "a")
    assert host.run("ip", "-6", "neigh", "show", "proxy").stdout.strip() == ""
    assert proxy_ndp(host) == "0"  # given back with the last proxy entry


DRIFT = {
    "proxy entry deleted": (
        "ip -6 neigh del proxy 2001:db8:100:0:1::2 dev up0",
        '"up0" does not answer neighbour solicitations for 2001:db8:100:0:1::2 (proxy NDP)',
    ),
    "proxy_ndp off": (
        "sysctl -qw net/ipv6/conf/up0/proxy_ndp=0",
        'proxy_ndp is off on uplink "up0"',
    ),
}


@pytest.mark.parametrize(("damage", "said"), list(DRIFT.values()), ids=list(DRIFT))
def test_check_names_the_proxy_objects_and_restore_heals_them(host: Host, damage: str, said: str):
    host.fireroute("up", "a", "--ipv6", "--pool6", ONLINK, "--prefix6", "96", "--proxy-ndp")
    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean  # the control: up, then check is clean
    host.sh(damage)
    rc, found = report(host)
    assert rc == 1 and not found["ok"], found
    named = [x for x in found["vms"]["a"] if said in x]
    assert len(named) == 1, found
    host.fireroute("restore")
    rc, healed = report(host)
    assert rc == 0 and healed == clean, healed
    assert host.fireroute("restore").stdout.strip() == "restore: nothing to do"
    host.fireroute("teardown")
    assert host.run("ip", "-6", "neigh", "show", "proxy").stdout.strip() == ""
    assert proxy_ndp(host) == "0"  # (given back by teardown too)


def test_bad_input_is_one_line_and_changes_nothing(host: Host):
    cases = {
        ("--prefix6", "80"): "--prefix6 needs a global --pool6",
        ("--pool6", "fd00:5::/48", "--proxy-ndp"): "--proxy-ndp needs a global --pool6",
        ("--pool6", ROUTED, "--prefix6", "127"): 'invalid --prefix6 "127"',
        ("--pool6", "2001:db8:200::/100", "--prefix6", "96"): "smaller than one VM's /96",
    }
    for args, said in cases.items():
        p = host.fireroute("up", "a", "--ipv6", *args, check=False)
        assert p.returncode != 0 and said in p.stderr and len(p.stderr.splitlines()) == 1, p
    p = host.fireroute("up", "a", "--proxy-ndp", check=False)
    assert p.returncode != 0 and "--proxy-ndp needs --ipv6" in p.stderr
    assert "fr-a" not in host.links() and json.loads(host.fireroute("ls", "--json").stdout) == []
    host.fireroute("up", "a", "--ipv6", "--pool6", ROUTED, "--prefix6", "120")  # the control
    assert "fr-a" in host.links()


def test_the_sub64_part_joins_a_table_that_is_there_and_stays_through_changes(lab: Lab):
    """A /64 VM first (the ip6 table without the sub-/64 part), then a sub-/64 one: the part
    is added to the table, check is clean; a policy change of the sub-/64 VM keeps it; its
    exact check still drops a neighbour's source beside the control of its own."""
    host = lab.host
    host.fireroute("up", "plain", "--ipv6")
    assert "vms128" not in host.nft_text()
    a_ns, a = guest(lab, "a", "--pool6", ROUTED, "--prefix6", "112")
    assert "@vms128" in host.run("nft", "list", "chain", "ip6", "firecracker", "forward").stdout
    rc, found = report(host)
    assert rc == 0 and found["ok"], found
    host.fireroute("policy", "a", "--deny-out", "2001:db8:5::/48")
    rc, found = report(host)
    assert rc == 0 and found["ok"], found
    own, forged = a["ipv6"]["address"], "2001:db8:200::1:2"  # (block 1's ::2, no one's)
    sh("ip", "-n", a_ns, "-6", "addr", "add", f"{forged}/128", "dev", "eth0", "nodad")
    assert sent(lab, a_ns, forged, own) == [f"{own}@{own}"]


def test_restore_after_a_reboot_records_proxy_ndp_and_the_last_down_gives_it_back(host: Host):
    """As after a reboot (/run cleared, the kernel fresh): no record, proxy_ndp 0, no entry;
    restore puts the entry and proxy_ndp back and records the 0, which the last down writes
    back (without the record it would stay 1)."""
    import os

    from fireroute.kernel.forwarding import record_path
    from fireroute.kernel.uplink6 import PROXY

    host.fireroute("up", "a", "--ipv6", "--pool6", ONLINK, "--prefix6", "96", "--proxy-ndp")
    path = record_path(os.stat(f"/var/run/netns/{host.ns}").st_ino, f"{PROXY}.up0")
    assert os.path.exists(path)  # (up recorded the 0)
    os.unlink(path)
    host.sh("ip -6 neigh del proxy 2001:db8:100:0:1::2 dev up0")
    host.sh("sysctl -qw net/ipv6/conf/up0/proxy_ndp=0")
    host.fireroute("restore")
    assert proxy_ndp(host) == "1" and os.path.exists(path)
    host.fireroute("down", "a")
    assert proxy_ndp(host) == "0" and not os.path.exists(path)


@pytest.mark.parametrize("in_process", [False, True])
def test_the_python_api_door(host: Host, in_process: bool):
    """The API (the daemon's executor when in-process) makes what the CLI makes: the proxy
    entry, proxy_ndp, the /96 in the VM's record; a bad prefix6 is its error, nothing made."""
    from tests.kernel.test_api import call

    opts = {"ipv6": True, "pool6": ONLINK, "prefix6": 96, "proxy_ndp": True}
    bad = call(host, ("up", ["x"], {**opts, "prefix6": 200}), in_process=in_process)
    [up] = call(host, ("up", ["a"], opts), in_process=in_process)
    assert bad[0]["error"] == "UsageError" and 'invalid --prefix6 "200"' in bad[0]["message"]
    assert up["ok"]["dict"]["ipv6"]["prefix"] == 96
    entries = host.run("ip", "-6", "neigh", "show", "proxy").stdout
    assert "2001:db8:100:0:1::2 dev up0 proxy" in entries and proxy_ndp(host) == "1"
    assert "fr-x" not in host.links()
    call(host, ("down", ["a"], {}), in_process=in_process)
    assert host.run("ip", "-6", "neigh", "show", "proxy").stdout.strip() == ""
    assert proxy_ndp(host) == "0"


def test_a_sub64_guests_ra_gives_the_route_and_no_address(host: Host):
    """``fireroute ra`` on a /96 VM's tap: the guest (default sysctls) takes ``default via``
    its gateway ``proto ra`` and no SLAAC address nor on-link prefix (the RA offers no prefix
    information); the control: a /64
    VM's guest beside it takes its SLAAC address from the same responder."""
    from tests.kernel.test_ra import Lab as RaLab
    from tests.kernel.test_ra import wait_for

    with contextlib.closing(RaLab(host)) as lab:
        rec = lab.up("sub", "--ipv6", "--pool6", ROUTED, "--prefix6", "96")
        sub = lab.wire(rec)
        full = lab.wire(lab.up("full", "--ipv6"))
        lab.start_responder()
        routes = wait_for(lambda: lab.ra_routes(sub), 5.0)
        assert [(r["gateway"], r["dev"]) for r in routes] == [(rec["ipv6"]["gateway"], "eth0")]
        assert wait_for(lambda: lab.slaac(full), 5.0)  # the control: SLAAC on a /64
        lab.answered(sub, rec)
        lab.arrived(sub)  # (that answer received and handled)
        assert lab.slaac(sub) == []
        # nor an on-link prefix (a prefix information option's L flag would add its route)
        doc = json.loads(sh("ip", "-n", sub, "-j", "-6", "route", "show").stdout)
        assert [r["dst"] for r in doc] == ["fe80::/64", "default"], doc


def test_a_sub64_neighbour_is_no_hairpin_of_a_guests_published_port(lab: Lab):
    """A published port's hairpin (a guest reaching its own port through the host) is told by
    the source's /64, which sub-/64 neighbours share: towards a sub-/64 guest only its own
    exact address counts. Its neighbour b, at the host's address and port, is refused; from
    outside (and from a itself) the port answers: the controls."""
    from tests.kernel.test_isolation6 import UPLINK6

    a_ns, a = guest(lab, "a", "--pool6", ROUTED, "--prefix6", "96", "--publish", "8080:80")
    b_ns, _ = guest(lab, "b", "--pool6", ROUTED, "--prefix6", "96")
    lab.serve(a_ns, "[::]:80")
    assert lab.connect(lab.host.inet, UPLINK6, 8080) == f"hello {INTERNET6}"  # from outside
    assert lab.connect(a_ns, UPLINK6, 8080).startswith("hello ")  # its own hairpin
    assert lab.connect(b_ns, UPLINK6, 8080).startswith("FAIL")  # the neighbour: refused
