"""A bridge shared by two state files with IPv6 guests in both (docs/ipv6.md, bridge mode):
both files' guests reach the internet over IPv6 (packets); each file's ``check`` names none
of the other's objects (another file's guest's /64 onto the bridge is not an orphan of the
file that made the bridge); downing one file's guests leaves the bridge's ``fe80::1``, IPv6
forwarding and the tables to the other, whose guest still works, and both checks clean; the
last down (of either file) removes the bridge, its addresses and the tables, and gives IPv6
forwarding back. Each shared object, taken by the first down, fails this test."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_bridge6 import BR, BridgeLab
from tests.kernel.test_isolation6 import INTERNET6, PING6, UPLINK6

pytestmark = pytest.mark.privileged


class TwoFiles(BridgeLab):
    def env(self, which: str) -> dict[str, str]:
        return {"FIREROUTE_STATE": str(self.host.state.with_name(f"{which}.db"))}

    def fr(self, which: str, *args: str, check: bool = True):  # noqa: ANN201
        return self.host.fireroute(*args, env=self.env(which), check=check)

    def bridged_in(self, which: str, name: str, six: bool = True) -> tuple[str, dict]:
        """A bridge guest of the state file ``which`` (IPv6 with ``six``) wired to its tap."""
        self.n += 1
        out = self.fr(which, "up", name, "--json", *(["--ipv6"] if six else []), *BR,
                      "--guest-ip", f"192.168.6.{self.n}/24").stdout  # fmt: skip
        rec = json.loads(out)[0]
        ns = self.wired.guest(rec["tap"], rec["mac"])
        sh("ip", "-n", ns, "addr", "add", f"{rec['guest_ip']}/{rec['prefix']}", "dev", "eth0")
        sh("ip", "-n", ns, "route", "add", "default", "via", rec["tap_ip"])
        if not six:
            return ns, rec
        v6 = rec["ipv6"]
        sh("ip", "-n", ns, "-6", "addr", "add", f"{v6['address']}/64", "dev", "eth0")
        sh("ip", "-n", ns, "-6", "route", "add", "default", "via", v6["gateway"], "dev", "eth0")
        self.run(ns, PING6, "fe80::1%eth0")
        return ns, rec

    def check(self, which: str) -> tuple[int, dict]:
        p = self.fr(which, "check", "--json", check=False)
        return p.returncode, json.loads(p.stdout)


@pytest.fixture
def lab(host: Host) -> Iterator[TwoFiles]:
    lab = TwoFiles(host)
    try:
        yield lab
    finally:
        lab.close()


def bridge6(host: Host) -> str:
    return host.run("ip", "-6", "addr", "show", "dev", "br0").stdout


def forwarding6(host: Host) -> str:
    return host.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip()


def clean(lab: TwoFiles, which: str) -> dict:
    rc, found = lab.check(which)
    assert rc == 0 and found["ok"], (which, found)
    return found


@pytest.mark.parametrize("first", ["one", "two"])
def test_two_state_files_share_a_bridge_with_v6_guests(lab: TwoFiles, first: str):
    """State file "one" makes the bridge with its guest "a" (IPv6) and keeps a v4-only guest
    "c" on it; "two" finds the bridge (and its fe80::1) for its guest "b" (IPv6). ``first``
    downs its guests with IPv6 first: the other's guest still works."""
    host = lab.host
    was = forwarding6(host)
    a, _ = lab.bridged_in("one", "a")
    lab.bridged_in("one", "c", six=False)
    b, _ = lab.bridged_in("two", "b")
    lab.serve(host.inet, f"[{INTERNET6}]:8080", "203.0.113.1:8080")
    for ns in (a, b):
        assert lab.connect(ns, INTERNET6, 8080) == f"hello {UPLINK6}"
    clean(lab, "one")
    clean(lab, "two")
    last = "two" if first == "one" else "one"
    six = {"one": ("a", a), "two": ("b", b)}
    lab.fr(first, "down", six[first][0])  # ("one" keeps "c": the bridge stays its own)
    assert "fe80::1/64" in bridge6(host) and forwarding6(host) == "1"
    # (a bridge takes the lowest MAC of its ports: with the going tap's gone it changed, and
    # the guest's neighbour entry for fe80::1 is stale until its own NUD finds out; flushed,
    # as that would, so this test is about what fireroute leaves, not the kernel's timers)
    sh("ip", "-n", six[last][1], "-6", "neigh", "flush", "dev", "eth0")
    assert lab.connect(six[last][1], INTERNET6, 8080) == f"hello {UPLINK6}"
    clean(lab, first)
    clean(lab, last)
    assert lab.fr(first, "gc", "--dry-run").stdout == ""  # (nothing of the other's to take)
    assert lab.fr(last, "gc", "--dry-run").stdout == ""
    lab.fr("one", "down", "--all")
    lab.fr("two", "down", "--all")
    assert "br0" not in host.links() and forwarding6(host) == was
    assert "firecracker" not in host.run("nft", "list", "tables").stdout
    for which in ("one", "two"):
        assert clean(lab, which) == {"ok": True, "vms": {}, "shared": {}, "orphans": []}
