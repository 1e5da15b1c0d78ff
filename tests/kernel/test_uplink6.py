"""An uplink that takes its IPv6 default route from router advertisements (accept_ra=1) would
lose it the moment IPv6 forwarding goes on (docs/ipv6-plan.md F9, pinned with its control by
tests/kernel/test_v6_facts.py): the first ``up --ipv6`` writes accept_ra=2 on it first, in the
same plan (kernel/uplink6.py), so the host keeps its route and takes later RAs; the last VM
with IPv6 gives the value back (down, teardown), and so does a failed up. An uplink that does
not depend on RAs, or whose accept_ra the admin set otherwise, is left alone. Every sysctl is
the test namespace's."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_v6_facts import RA, wait_for

pytestmark = pytest.mark.privileged

ACCEPT_RA = "net/ipv6/conf/up0/accept_ra"
FORWARDING6 = "net/ipv6/conf/all/forwarding"


def ra_default(host: Host) -> list[dict]:
    out = host.run("ip", "-6", "-j", "route", "show", "default").stdout
    return [r for r in json.loads(out) if r.get("protocol") == "ra"]


def sysctl(host: Host, key: str) -> str:
    return host.run("cat", f"/proc/sys/{key}").stdout.strip()


def send_ra(host: Host) -> None:
    sh("ip", "netns", "exec", host.inet, sys.executable, "-c", RA, "down0")


def learn_route_from_an_ra(host: Host) -> None:
    sh("ip", "-n", host.inet, "address", "add", "fe80::1/64", "dev", "down0", "nodad")
    ok = wait_for(lambda: host.run("ip", "-j", "link", "show", "up0").stdout.count("LOWER_UP") > 0)
    assert ok
    send_ra(host)
    assert wait_for(lambda: bool(ra_default(host))), host.run("ip", "-6", "route").stdout


def recorded(host: Host) -> list[str]:
    """The namespace's accept_ra record (kernel/uplink6.py), by the test namespace's inode."""
    inode = os.stat(f"/var/run/netns/{host.ns}").st_ino
    try:
        with open(f"/run/fireroute/ip6_accept_ra-{inode}") as f:
            return f.read().split()[1:]
    except FileNotFoundError:
        return []


def still_takes_ras(host: Host) -> bool:
    """The RA-learned route, deleted, comes back with the next RA."""
    host.run("ip", "-6", "route", "del", "default", "proto", "ra")
    assert not ra_default(host)
    send_ra(host)
    return wait_for(lambda: bool(ra_default(host)))


def test_the_first_v6_vm_keeps_the_uplinks_route_and_the_last_gives_accept_ra_back(host: Host):
    learn_route_from_an_ra(host)
    plan = host.fireroute("plan", "a", "--ipv6").stdout
    lines = plan.splitlines()
    at = [i for i, line in enumerate(lines) if "accept_ra=2" in line]
    fwd = [i for i, line in enumerate(lines) if "net.ipv6.conf.all.forwarding=1" in line]
    assert len(at) == 1 and len(fwd) == 1 and at[0] < fwd[0], plan  # written first
    assert "net/ipv6/conf/up0/accept_ra=2" in lines[at[0]]
    host.fireroute("up", "a", "--ipv6")
    assert (sysctl(host, FORWARDING6), sysctl(host, ACCEPT_RA)) == ("1", "2")
    assert ra_default(host), "the host kept its route"
    assert still_takes_ras(host), "and takes later RAs under forwarding"
    assert recorded(host) == ["up0", "1"]
    # a second VM with IPv6 changes nothing; the first going down leaves it to the second
    assert "accept_ra" not in host.fireroute("plan", "b", "--ipv6").stdout
    host.fireroute("up", "b", "--ipv6")
    host.fireroute("down", "a")
    assert (sysctl(host, FORWARDING6), sysctl(host, ACCEPT_RA)) == ("1", "2")
    host.fireroute("down", "b")  # the last: forwarding off, then accept_ra as it was
    assert (sysctl(host, FORWARDING6), sysctl(host, ACCEPT_RA)) == ("0", "1")
    assert recorded(host) == []
    assert ra_default(host) and still_takes_ras(host)
    assert host.fireroute("check", "--json", check=False).returncode == 0


def test_teardown_gives_accept_ra_back(host: Host):
    learn_route_from_an_ra(host)
    host.fireroute("up", "a", "--ipv6")
    host.fireroute("up", "c")  # (a v4-only VM beside it)
    assert sysctl(host, ACCEPT_RA) == "2"
    host.fireroute("teardown")
    assert (sysctl(host, FORWARDING6), sysctl(host, ACCEPT_RA)) == ("0", "1")
    assert recorded(host) == [] and ra_default(host)


def test_a_failed_up_gives_accept_ra_back(host: Host):
    learn_route_from_an_ra(host)
    p = host.fireroute("up", "doomed", "--ipv6", env={"FIREROUTE_FAULT": "fail@2"}, check=False)
    assert p.returncode != 0 and "injected fault" in p.stderr, p.stderr
    assert (sysctl(host, FORWARDING6), sysctl(host, ACCEPT_RA)) == ("0", "1")
    assert recorded(host) == [] and ra_default(host)
    assert host.fireroute("ls", "--json").stdout.strip() == "[]"
    # the control: the same up without the fault writes it
    host.fireroute("up", "doomed", "--ipv6")
    assert sysctl(host, ACCEPT_RA) == "2" and ra_default(host)
    host.fireroute("down", "doomed")


@pytest.mark.parametrize("admin", ["0", "2"])
def test_an_accept_ra_the_admin_set_otherwise_is_left_alone(host: Host, admin: str):
    learn_route_from_an_ra(host)
    host.run("sysctl", "-qw", f"{ACCEPT_RA}={admin}")
    assert "accept_ra" not in host.fireroute("plan", "a", "--ipv6").stdout
    host.fireroute("up", "a", "--ipv6")
    assert sysctl(host, ACCEPT_RA) == admin and recorded(host) == []
    host.fireroute("down", "a")
    assert sysctl(host, ACCEPT_RA) == admin


def test_an_uplink_without_an_ra_route_and_a_v4_only_vm_are_left_alone(host: Host):
    assert sysctl(host, ACCEPT_RA) == "1" and not ra_default(host)
    host.fireroute("up", "a", "--ipv6")  # (no route to keep: nothing written)
    assert sysctl(host, ACCEPT_RA) == "1" and recorded(host) == []
    host.fireroute("down", "a")
    learn_route_from_an_ra(host)
    host.fireroute("up", "b")  # a v4-only VM: IPv6 forwarding stays as it is
    assert (sysctl(host, FORWARDING6), sysctl(host, ACCEPT_RA)) == ("0", "1")
    assert ra_default(host)
    host.fireroute("down", "b")


def test_restore_after_a_reboot_writes_it_first_again(host: Host):
    """After a reboot forwarding is off, accept_ra is 1 again and /run is empty: restore
    switches IPv6 forwarding on, with accept_ra=2 first as up does."""
    learn_route_from_an_ra(host)
    host.fireroute("up", "a", "--ipv6")
    host.run("sysctl", "-qw", f"{FORWARDING6}=0", f"{ACCEPT_RA}=1")  # (as a boot leaves them)
    inode = os.stat(f"/var/run/netns/{host.ns}").st_ino
    for name in ("ip6_forward", "ip6_accept_ra"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/run/fireroute/{name}-{inode}")
    dry = host.fireroute("restore", "--dry-run").stdout
    assert "net/ipv6/conf/up0/accept_ra=2" in dry, dry
    host.fireroute("restore")
    assert (sysctl(host, FORWARDING6), sysctl(host, ACCEPT_RA)) == ("1", "2")
    assert ra_default(host) and recorded(host) == ["up0", "1"]
    host.fireroute("down", "a")
    assert (sysctl(host, FORWARDING6), sysctl(host, ACCEPT_RA)) == ("0", "1")
