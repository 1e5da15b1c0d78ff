"""A NAT VM's own IPv6 gateway against the kernel (addressing.gateway6_text: ``fe80::1:`` and
the low 48 bits of its block's ordinal; every tap holding one address costs the kernel a walk
of all of them per add, bench/addr_add6.py), and a state file whose IPv6 leases predate it:
every NAT VM with IPv6 there keeps ``fe80::1`` (its guest was told so) until the file holds no
IPv6 lease; the next one records ``gateway6 = own`` and has its own again."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged

POOL6 = "fd3c:9a1e:52b0::/48"


def gateway(host: Host, name: str) -> str:
    (vm,) = [v for v in json.loads(host.fireroute("ls", "--json").stdout) if v["name"] == name]
    return str(vm["ipv6"]["gateway"])


def link_locals(host: Host, dev: str) -> list[str]:
    doc = json.loads(host.run("ip", "-j", "-6", "addr", "show", "dev", dev).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for d in doc for a in d.get("addr_info", [])]


def local_routes(host: Host, dev: str) -> list[str]:
    doc = json.loads(host.run("ip", "-j", "-6", "route", "show", "table", "local").stdout)
    return [r["dst"] for r in doc if r.get("dev") == dev and r.get("type") == "local"]


def meta(host: Host, key: str) -> str | None:
    db = sqlite3.connect(host.state)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def test_each_v6_tap_holds_a_gateway_of_its_own(host: Host):
    """Two VMs: each tap holds its own gateway alone (the kernel's local route for it on that
    tap only), the guest script and the JSON say it, and check is clean."""
    host.fireroute("up", "a", "b", "--ipv6", "--pool6", POOL6)
    assert (gateway(host, "a"), gateway(host, "b")) == (
        "fe80::1:9a1e:52b0:0",
        "fe80::1:9a1e:52b0:1",
    )
    for name in ("a", "b"):
        gw = gateway(host, name)
        assert link_locals(host, f"fr-{name}") == [f"{gw}/64"]
        assert local_routes(host, f"fr-{name}") == [gw]
        script = host.fireroute("show", name, "--format", "guest-script").stdout
        assert f"ip -6 route add default via {gw} dev eth0" in script, script
    assert meta(host, "gateway6") == "own"
    assert host.fireroute("check").returncode == 0


def test_a_state_file_from_before_keeps_fe80_1_until_it_holds_no_v6_lease(host: Host):
    """What an earlier fireroute left (the tap holds fe80::1, the file no ``gateway6`` key)
    reads as clean and says fe80::1; a new v6 VM in that file gets fe80::1 too (one file,
    one answer); once the file holds no IPv6 lease the next VM has its own again (the
    control). The group delete's route-first path (its threshold lowered) deletes the local
    route of the gateway the tap holds."""
    host.fireroute("up", "old", "--ipv6", "--pool6", POOL6)
    own = gateway(host, "old")
    host.sh(
        f"ip addr del {own}/64 dev fr-old && ip addr add fe80::1/64 dev fr-old nodad"
    )  # (as an earlier version made it)
    db = sqlite3.connect(host.state)
    db.execute("DELETE FROM meta WHERE key = 'gateway6'")
    db.commit()
    db.close()
    assert gateway(host, "old") == "fe80::1"
    assert (
        "via fe80::1 dev eth0" in host.fireroute("show", "old", "--format", "guest-script").stdout
    )
    assert host.fireroute("check").returncode == 0, host.fireroute("check", check=False).stdout
    host.fireroute("up", "new", "--ipv6", "--pool6", POOL6)
    assert gateway(host, "new") == "fe80::1" and link_locals(host, "fr-new") == ["fe80::1/64"]
    assert meta(host, "gateway6") is None
    assert host.fireroute("check").returncode == 0
    plan = lowered(host, "down", "--all", "--dry-run").splitlines()
    local = [line for line in plan if line.startswith("ip route del fe80::1") and "local" in line]
    assert sorted(local) == [
        f"ip route del fe80::1/128 dev fr-{n} table local" for n in ("new", "old")
    ], plan
    lowered(host, "down", "--all")
    assert not [n for n in host.links() if n.startswith("fr-")]
    host.fireroute("up", "fresh", "--ipv6", "--pool6", POOL6)  # the control
    assert gateway(host, "fresh").startswith("fe80::1:")
    assert link_locals(host, "fr-fresh") == [f"{gateway(host, 'fresh')}/64"]
    assert meta(host, "gateway6") == "own"
    assert host.fireroute("check").returncode == 0


LOWERED = """
import sys
from fireroute.plan import compiler
compiler.ROUTES6_FIRST = 2  # (two VMs take the big batch's path)
from fireroute.entry import main
sys.exit(main(sys.argv[1:]))
"""


def lowered(host: Host, *args: str) -> str:
    argv = ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", LOWERED]
    env = {**os.environ, "FIREROUTE_STATE": str(host.state)}
    out = subprocess.run([*argv, *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout
