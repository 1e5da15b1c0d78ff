"""A proxy NDP entry whose lease is gone (docs/ipv6.md, proxy NDP): the kernel keeps no tag on
a neighbour proxy entry, so fireroute knows one as this state file's by its address: the
``::2`` of a block of a pool its VMs were given, on their uplink. The state file restored
from a backup taken before a ``--proxy-ndp`` VM's ``up`` (its lease gone, its tap and entry
left): ``check`` names the entry, ``gc`` deletes it and gives the uplink its ``proxy_ndp``
back once no proxy entry is left; an entry of someone else's on the same uplink (outside the
pool) is neither named nor touched, and keeps ``proxy_ndp`` on while it stands."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Host
from tests.kernel.test_drift import report
from tests.kernel.test_prefix6 import ONLINK, proxy_ndp

pytestmark = pytest.mark.privileged

FOREIGN = "2001:db8:100::77"
"""someone else's proxy entry on the uplink: in its /64, outside fireroute's pool"""


def copy(src: Path, dst: Path) -> None:
    """The state file copied whole (sqlite's backup: the write-ahead log included)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def entries(host: Host) -> list[str]:
    out = host.run("ip", "-6", "neigh", "show", "proxy", "dev", "up0").stdout
    return sorted(line.split()[0] for line in out.splitlines())


def lost(host: Host, tmp: Path, name: str) -> str:
    """``up NAME --proxy-ndp`` into the pool, then the state file put back as it was before
    (its lease gone, its objects left); the entry's address."""
    copy(host.state, tmp / "backup.db")
    host.fireroute("up", name, "--ipv6", "--pool6", ONLINK, "--prefix6", "96", "--proxy-ndp")
    rec = json.loads(host.fireroute("show", name, "--json").stdout)
    copy(tmp / "backup.db", host.state)
    return rec["ipv6"]["address"]


def test_gc_deletes_a_lost_leases_proxy_entry_and_leaves_anothers(host: Host, tmp_path: Path):
    # the pool is known by a VM of it without --proxy-ndp
    host.fireroute("up", "keep", "--ipv6", "--pool6", ONLINK, "--prefix6", "96")
    host.sh(f"ip -6 neigh add proxy {FOREIGN} dev up0")
    stray = lost(host, tmp_path, "gone")
    assert entries(host) == sorted([FOREIGN, stray]) and proxy_ndp(host) == "1"
    rc, found = report(host)
    said = [x for x in found["orphans"] if "neighbour solicitations" in x]
    assert rc == 1 and said == [
        f'"up0" answers neighbour solicitations for {stray}, which no lease asks for'
    ], found
    assert FOREIGN not in str(found)  # (someone else's: not ours to name)
    host.fireroute("gc")
    assert entries(host) == [FOREIGN]  # the negative control: another's entry stays
    assert proxy_ndp(host) == "1"  # (it still needs proxy_ndp)
    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean
    # without the foreign entry, gc of the last proxy entry gives proxy_ndp back
    host.sh(f"ip -6 neigh del proxy {FOREIGN} dev up0")
    stray = lost(host, tmp_path, "gone2")
    assert entries(host) == [stray] and proxy_ndp(host) == "1"
    host.fireroute("gc")
    assert entries(host) == [] and proxy_ndp(host) == "0"
    rc, clean = report(host)
    assert rc == 0 and clean["ok"], clean
    assert "fr-keep" in host.links()  # (the pool's VM untouched)
