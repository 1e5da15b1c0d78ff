"""An uplink that takes its IPv6 default route from router advertisements (accept_ra=1) would
lose it the moment IPv6 forwarding goes on (docs/ipv6-plan.md F9): the first ``up --ipv6`` is
refused in one line, nothing changed; with accept_ra=2 (the control) it goes ahead and the
host keeps its route."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_v6_facts import RA, wait_for

pytestmark = pytest.mark.privileged


def ra_default(host: Host) -> list[dict]:
    out = host.run("ip", "-6", "-j", "route", "show", "default").stdout
    return [r for r in json.loads(out) if r.get("protocol") == "ra"]


def learn_route_from_an_ra(host: Host) -> None:
    sh("ip", "-n", host.inet, "address", "add", "fe80::1/64", "dev", "down0", "nodad")
    ok = wait_for(lambda: host.run("ip", "-j", "link", "show", "up0").stdout.count("LOWER_UP") > 0)
    assert ok
    sh("ip", "netns", "exec", host.inet, sys.executable, "-c", RA, "down0")
    assert wait_for(lambda: bool(ra_default(host))), host.run("ip", "-6", "route").stdout


def test_an_uplink_that_relies_on_router_advertisements_is_refused(host: Host):
    learn_route_from_an_ra(host)
    p = host.fireroute("up", "a", "--ipv6", check=False)
    assert p.returncode != 0 and p.stderr.count("\n") == 1, p.stderr
    assert 'uplink "up0" takes its IPv6 default route from router advertisements' in p.stderr
    assert "accept_ra=2" in p.stderr
    assert ra_default(host) and "fr-a" not in host.links()
    assert host.fireroute("ls", "--json").stdout.strip() == "[]"
    assert host.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "0"
    # the control: with accept_ra=2 the same up goes ahead, and the host keeps its route
    host.run("sysctl", "-qw", "net.ipv6.conf.up0.accept_ra=2")
    host.fireroute("up", "a", "--ipv6")
    assert host.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "1"
    assert ra_default(host)
    host.fireroute("down", "a")


def test_a_v4_only_vm_is_not_refused_for_it(host: Host):
    learn_route_from_an_ra(host)
    host.fireroute("up", "a")  # (IPv6 forwarding stays as it is)
    assert ra_default(host)
    host.fireroute("down", "a")
