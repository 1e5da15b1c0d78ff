"""doctor's checks, each against a host namespace that trips it, beside the same host before
the trip (where that check is ok). Conntrack and neighbour-table limits are machine-wide knobs
(not per namespace), so they are not tripped here; the FORWARD-policy check is in
test_isolation.py."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


def findings(host: Host) -> tuple[int, dict[str, str]]:
    p = host.fireroute("doctor", "--json", check=False)
    return p.returncode, {f["what"]: f["level"] for f in json.loads(p.stdout)}


def level(found: dict[str, str], needle: str) -> str:
    hits = [lvl for what, lvl in found.items() if needle in what]
    assert len(hits) == 1, (needle, found)
    return hits[0]


@pytest.mark.skipif(not shutil.which("iptables-legacy"), reason="iptables-legacy not installed")
def test_legacy_iptables_rules_are_reported(host: Host):
    rc, found = findings(host)
    assert level(found, "iptables-legacy") == "ok"
    host.run("iptables-legacy", "-A", "FORWARD", "-i", "x0", "-j", "DROP")
    rc, found = findings(host)
    assert level(found, "iptables-legacy") == "warn"
    assert "1 iptables-legacy rule(s)" in json.dumps(found)


def test_forwarding_off_under_vms_fails(host: Host):
    host.fireroute("up", "a")
    rc, found = findings(host)
    assert rc == 0 and level(found, "IPv4 forwarding") == "ok"
    host.run("sysctl", "-qw", "net.ipv4.ip_forward=0")
    rc, found = findings(host)
    assert rc == 1 and level(found, "IPv4 forwarding") == "fail"


def test_strict_rp_filter_is_reported(host: Host):
    for iface in ("all", "default"):
        host.run("sysctl", "-qw", f"net/ipv4/conf/{iface}/rp_filter=0")
    rc, found = findings(host)
    assert not [w for w in found if "rp_filter" in w]
    host.run("sysctl", "-qw", "net/ipv4/conf/all/rp_filter=1")
    rc, found = findings(host)
    assert level(found, "rp_filter=1") == "warn"


def test_an_uplink_that_relies_on_router_advertisements_is_reported(host: Host):
    from tests.kernel.test_uplink6 import learn_route_from_an_ra

    rc, found = findings(host)
    assert level(found, "IPv6 forwarding is off") == "ok"
    assert not any("router advertisements" in w for w in found)  # the control: none yet
    learn_route_from_an_ra(host)
    rc, found = findings(host)
    said = 'IPv6 default route via "up0" comes from router advertisements (accept_ra=1): the '
    assert level(found, said + "first up --ipv6 sets its accept_ra to 2 first") == "ok"
    host.fireroute("up", "a", "--ipv6")  # it does, and doctor says so while it holds it
    rc, found = findings(host)
    assert level(found, 'set accept_ra=2 on uplink "up0" (it was 1)') == "ok"
    host.fireroute("down", "a")
    rc, found = findings(host)
    assert not any("accept_ra=2" in w for w in found)


@pytest.mark.skipif(not shutil.which("iptables-legacy"), reason="iptables-legacy not installed")
@pytest.mark.parametrize(
    ("chain", "said", "to"),
    [
        ("FORWARD", "fail", ("203.0.113.1", 80)),  # the guest's traffic out through the host
        ("INPUT", "warn", ("tap", 7001)),  # its traffic to the host, on a port it may use
    ],
)
def test_a_legacy_drop_policy_is_reported(host: Host, chain: str, said: str, to: tuple):
    """An iptables-legacy built-in chain with a DROP policy and no rule at all drops guest
    traffic beside fireroute's nf_tables rules (both hooks run), and doctor says so (it said
    "no iptables-legacy rules"). The control: the same guest's traffic gets through, and
    doctor is ok, before the policy is set."""
    from tests.conftest import sh
    from tests.kernel.test_isolation import Lab

    lab = Lab(host)
    try:
        sh("ip", "-n", host.inet, "route", "add", "172.16.0.0/16", "via", "203.0.113.2")
        lab.serve(host.inet, "203.0.113.1:80")
        lab.serve(host.ns, "0.0.0.0:7001")
        ns, rec = lab.guest("g", "--allow-host-port", "7001/tcp")
        addr = rec["tap_ip"] if to[0] == "tap" else to[0]
        assert lab.connect(ns, addr, to[1]).startswith("hello ")
        rc, found = findings(host)
        assert rc == 0 and level(found, "iptables-legacy") == "ok"
        host.run("iptables-legacy", "-P", chain, "DROP")
        assert lab.connect(ns, addr, to[1]).startswith("FAIL")  # what doctor now tells
        rc, found = findings(host)
        assert level(found, f"iptables-legacy policy DROP on filter {chain}, ") == said
        assert rc == (1 if said == "fail" else 0)
        p = host.fireroute("doctor", "--json", check=False)
        (advice,) = [f["advice"] for f in json.loads(p.stdout) if "legacy" in f["what"]]
        assert f"iptables-legacy -P {chain} ACCEPT" in advice
    finally:
        lab.close()
