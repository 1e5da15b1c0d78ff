"""Egress policy and published ports over IPv6 (issue 24 step 11, docs/ipv6-plan.md 1.12), with
real packets through fireroute's own tap (tests/kernel/tapwire.py, as test_isolation6.py): a
``--deny-out`` IPv6 CIDR is refused while another destination and an ``--allow-out`` exception
pass; ``--egress public`` refuses unique local, documentation and the uplink's own IPv6
networks while a global address passes; ``--egress none`` refuses every IPv6 destination; a
port published on every address is reached at the host's IPv6 uplink address from outside and
from the host and answered by the guest's ``::2`` (and by the guest itself through the host,
masqueraded), one on a host IPv6 address there only, an unpublished one not; ``policy`` and
``publish`` change a running VM's IPv6 side too. Every refusal stands beside the control that
the same path works."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_isolation6 import INTERNET6, UPLINK6, Lab

pytestmark = pytest.mark.privileged

GLOBAL, GLOBAL2 = "2000::1", "2000::2"
"""global unicast addresses of the internet side (2000::/3, in no list of ``--egress public``)"""
ULA = "fd12:3456::1"
"""a unique local address of the internet side (another network's private one)"""
UPLINK_NET, UPLINK_NET_PEER = "2a00:100::2", "2a00:100::1"
"""a second, global, network of the uplink: the host's own (``--egress public`` denies it)"""
REFUSED = "Connection refused"
"""what a policy refusal looks like to the guest: a TCP reset from the host (out_reject)"""


@pytest.fixture
def lab(host: Host) -> Iterator[Lab]:
    lab = Lab(host)
    host.run("ip", "-6", "addr", "add", f"{UPLINK_NET}/64", "dev", "up0", "nodad")
    inet = ["ip", "-n", host.inet, "-6", "addr", "add"]
    sh(*inet, f"{UPLINK_NET_PEER}/64", "dev", "down0", "nodad")
    for a in (GLOBAL, GLOBAL2, ULA):
        sh(*inet, f"{a}/128", "dev", "lo")
    lab.serve(host.inet, *(f"[{a}]:8080" for a in (INTERNET6, GLOBAL, GLOBAL2, ULA)),
              f"[{UPLINK_NET_PEER}]:8080", "203.0.113.1:8080")  # fmt: skip
    try:
        yield lab
    finally:
        lab.close()


def reached(lab: Lab, ns: str, addr: str) -> bool:
    """Does the guest in ``ns`` reach the internet side's ``addr`` (port 8080), masqueraded
    to an address of the uplink? Refused, the refusal is the policy's (a reset: out_reject),
    not a timeout."""
    out = lab.connect(ns, addr, 8080)
    if out.startswith("FAIL"):
        assert REFUSED in out, out
        return False
    uplink = (UPLINK6, UPLINK_NET) if ":" in addr else ("203.0.113.2",)  # (either v6 one)
    assert out in [f"hello {a}" for a in uplink], out
    return True


def test_a_denied_v6_cidr_is_refused_and_the_rest_passes(lab: Lab):
    ns, _ = lab.guest("a", "--deny-out", "2000::/16", "--allow-out", f"{GLOBAL2}/128")
    assert not reached(lab, ns, GLOBAL)
    assert reached(lab, ns, GLOBAL2)  # the exception
    assert reached(lab, ns, INTERNET6)  # another destination: the control
    assert reached(lab, ns, "203.0.113.1")  # and IPv4, whose policy has nothing of it
    other, _ = lab.guest("b")  # the control: a guest without the policy reaches it
    assert reached(lab, other, GLOBAL)


def test_egress_public_refuses_what_is_not_public_over_v6(lab: Lab):
    ns, _ = lab.guest("a", "--egress", "public")
    assert not reached(lab, ns, ULA)  # unique local
    assert not reached(lab, ns, INTERNET6)  # documentation (2001:db8::/32), the uplink's /64
    assert not reached(lab, ns, UPLINK_NET_PEER)  # the uplink's own global network
    assert reached(lab, ns, GLOBAL)  # a global address: the control
    other, _ = lab.guest("b")  # the same destinations without the policy: reached
    assert all(reached(lab, other, a) for a in (ULA, INTERNET6, UPLINK_NET_PEER))


def test_egress_none_refuses_every_v6_destination(lab: Lab):
    ns, _ = lab.guest("a", "--egress", "none")
    for a in (GLOBAL, INTERNET6, "203.0.113.1"):
        assert not reached(lab, ns, a), a
    other, _ = lab.guest("b")  # the control
    assert reached(lab, other, GLOBAL)


def test_policy_changes_a_running_v6_guests_ipv6_side(lab: Lab):
    h = lab.host
    ns, _ = lab.guest("a")
    assert reached(lab, ns, GLOBAL)  # before: no policy
    h.fireroute("policy", "a", "--deny-out", "2000::/16")
    assert not reached(lab, ns, GLOBAL)
    assert reached(lab, ns, INTERNET6)  # the control
    assert h.fireroute("check").returncode == 0
    h.fireroute("policy", "a", "--reset")
    assert reached(lab, ns, GLOBAL)


def hello(out: str, who: str) -> None:
    assert out == f"hello {who}", out


def test_a_published_port_is_reached_over_v6_at_the_hosts_address(lab: Lab):
    h = lab.host
    ns, rec = lab.guest("web", "--publish", "8080:80", "--publish", f"[{UPLINK_NET}]:8443:443")
    lab.serve(ns, "[::]:80", "[::]:443", "[::]:81")  # (both families: IPv4's as ::ffff:)
    hello(lab.connect(h.inet, UPLINK6, 8080), INTERNET6)  # from outside: the client's address
    hello(lab.connect(h.inet, UPLINK_NET, 8080), UPLINK_NET_PEER)  # every host address
    hello(lab.connect(h.ns, UPLINK6, 8080), UPLINK6)  # the host itself, at its address
    hello(lab.connect(h.inet, "203.0.113.2", 8080), "::ffff:203.0.113.1")  # IPv4 as before
    hello(lab.connect(h.inet, UPLINK_NET, 8443), UPLINK_NET_PEER)  # the address-bound port
    # the controls: that port on another host address, an unpublished port, nothing else
    assert lab.connect(h.inet, UPLINK6, 8443).startswith("FAIL")
    assert lab.connect(h.inet, UPLINK6, 81).startswith("FAIL")
    assert lab.connect(h.inet, UPLINK6, 8081).startswith("FAIL")
    # hairpin: the guest reaches its own port through the host, masqueraded to a host address
    # (the tap has only fe80::1: the kernel picks one of the host's global ones)
    assert lab.connect(ns, UPLINK6, 8080) in (f"hello {UPLINK6}", f"hello {UPLINK_NET}")
    assert h.fireroute("check").returncode == 0
    h.fireroute("unpublish", "web", "8080:80")
    assert lab.connect(h.inet, UPLINK6, 8080).startswith("FAIL")
    h.fireroute("publish", "web", "9090:81")
    hello(lab.connect(h.inet, UPLINK6, 9090), INTERNET6)
    assert rec["ipv6"]["address"].endswith("::2")


def test_a_port_on_the_v6_loopback_is_refused_and_changes_nothing(lab: Lab):
    h = lab.host
    before = h.nft_text()
    out = h.fireroute("up", "a", "--ipv6", "--publish", "[::1]:8080:80", check=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "a port on [::1] cannot be forwarded" in out.stderr
    assert h.nft_text() == before and "fr-a" not in h.links()
    # the control: 127.0.0.1 is taken (an IPv4 port: it has no IPv6 image)
    h.fireroute("up", "a", "--ipv6", "--publish", "127.0.0.1:8080:80")
    assert "pub_addr" not in h.run("nft", "list", "table", "ip6", "firecracker").stdout


def test_a_v6_host_port_is_one_vms(lab: Lab):
    h = lab.host
    h.fireroute("up", "a", "--ipv6", "--publish", f"[{UPLINK6}]:8080:80")
    for spec in ("8080:81", f"[{UPLINK6}]:8080:81"):  # every address, or the same one
        p = h.fireroute("up", "b", "--ipv6", "--publish", spec, check=False)
        assert p.returncode == 3 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert f'host port [{UPLINK6}]:8080/tcp is published by vm "a"' in p.stderr, p.stderr
    assert "fr-b" not in h.links()
    # the controls: the same port on another host address, another port on the same one
    h.fireroute("up", "b", "--ipv6", "--publish", f"[{UPLINK_NET}]:8080:81")
    h.fireroute("up", "c", "--ipv6", "--publish", f"[{UPLINK6}]:8081:81")
