"""Router advertisements for bridge guests (docs/ipv6.md, bridge): two guests wired to the taps
of one bridge (tests/kernel/tapwire.py), with their default sysctls (accept_ra=1, autoconf=1)
and no address given, each take a SLAAC address in their own /64 and ``default via fe80::1``
from ``fireroute ra``, and never the other's prefix, though they share the bridge: each RA is
written onto its guest's tap, and a solicitation is answered with the asker's prefix alone,
told by its Ethernet source. Controls: without the responder neither guest gets anything, and
the address taken is the one the guest reaches the internet from."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from tests.conftest import Host
from tests.kernel import test_isolation6 as isolation6
from tests.kernel.test_ra import Lab, eui64, wait_for
from tests.kernel.test_ra_serve import start

pytestmark = pytest.mark.privileged

BR = ["--mode", "bridge", "--bridge-address", "192.168.6.1/24", "--ipv6"]


class BridgeLab(Lab):
    def bridged(self, name: str, n: int) -> tuple[str, dict]:
        """A v6 bridge guest wired to its tap, left unconfigured: its namespace, record."""
        rec = self.up(name, *BR, "--guest-ip", f"192.168.6.{n}/24")
        return self.wire(rec), rec

    def prefixes(self, ns: str) -> set[IPv6Network]:
        return {IPv6Network(f"{a['local']}/64", strict=False) for a in self.slaac(ns)}


def packet_sockets(pid: int) -> int:
    """The packet sockets process ``pid`` holds (its sockets' inodes in its namespace's list)."""
    fds = Path(f"/proc/{pid}/fd")
    held = {str(fd.readlink()) for fd in fds.iterdir() if fd.exists()}
    lines = Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]
    return sum(1 for line in lines if f"socket:[{line.split()[-1]}]" in held)


@pytest.fixture
def lab(host: Host) -> Iterator[BridgeLab]:
    with contextlib.closing(BridgeLab(host)) as lab:
        yield lab


def own(lab: BridgeLab, ns: str, rec: dict, timeout: float) -> None:
    """``ns`` took exactly its own SLAAC address and the default route via ``fe80::1``."""
    want = eui64(rec["ipv6"]["block"], rec["mac"])
    got = wait_for(lambda: lab.slaac(ns), timeout)
    assert [(IPv6Address(a["local"]), a["prefixlen"]) for a in got] == [(want, 64)], got
    routes = wait_for(lambda: lab.ra_routes(ns), 2.0)
    assert [(r["gateway"], r["dev"]) for r in routes] == [("fe80::1", "eth0")]


def test_each_bridge_guest_configures_itself_on_its_own_prefix_only(lab: BridgeLab):
    a, ra = lab.bridged("a", 21)
    b, rb = lab.bridged("b", 22)
    assert ra["ipv6"]["block"] != rb["ipv6"]["block"]
    # without the responder: each solicits, nobody answers (the bridge sends no RA itself)
    lab.solicit(a)
    lab.solicit(b)
    assert wait_for(lambda: lab.slaac(a) or lab.slaac(b), 2.0) == []
    lab.start_responder()
    own(lab, a, ra, 5.0)
    own(lab, b, rb, 5.0)
    # the negative: a solicitation from each is answered to the asker alone; after them (and
    # the responder's advertisement at start) neither has the other's prefix, once each one's
    # control, sent after both answers, has arrived
    lab.answered(a, ra)
    lab.answered(b, rb)
    lab.arrived(a)
    lab.arrived(b)
    assert lab.prefixes(a) == {IPv6Network(ra["ipv6"]["block"])}
    assert lab.prefixes(b) == {IPv6Network(rb["ipv6"]["block"])}
    # over the address and route it took, a guest reaches the internet, masqueraded
    lab.serve(lab.host.inet, f"[{isolation6.INTERNET6}]:8080")
    source = str(eui64(rb["ipv6"]["block"], rb["mac"]))
    assert lab.connect(b, isolation6.INTERNET6, 8080, source) == f"hello {isolation6.UPLINK6}"
    code, out, err = lab.stop_responder()
    assert (code, err) == (0, "")
    assert f"{ra['tap']} (vm a) {ra['ipv6']['block']} to ff02::1 (periodic)" in out, out
    assert f"{rb['tap']} (vm b) {rb['ipv6']['block']} to " in out and "(solicited)" in out


def test_a_bridge_guest_up_after_the_responder_is_answered_with_its_prefix(lab: BridgeLab):
    """A guest up while the responder runs: its solicitation, told by its MAC on the bridge,
    is answered with its prefix alone; the guest already on the bridge gets nothing of it."""
    a, ra = lab.bridged("a", 21)
    lab.start_responder()
    own(lab, a, ra, 5.0)
    c, rc = lab.bridged("c", 23)
    lab.solicit(c)
    own(lab, c, rc, 3.0)
    lab.arrived(a)  # (after c's answer: had that been written onto a's tap, a has it now)
    lab.arrived(c)
    assert lab.prefixes(a) == {IPv6Network(ra["ipv6"]["block"])}
    assert lab.prefixes(c) == {IPv6Network(rc["ipv6"]["block"])}
    _, out, _ = lab.stop_responder()
    answered = [line for line in out.splitlines() if line.endswith("(solicited)")]
    assert any(f"{rc['tap']} (vm c) {rc['ipv6']['block']} to fe80::" in x for x in answered), out


def test_the_daemons_thread_advertises_to_a_bridge_guest_and_keeps_no_socket_after_it(
    lab: BridgeLab, host: Host, tmp_path: Path
):
    """``fireroute serve`` (``"ra": true``) advertises to a bridge guest the CLI made in its
    state file, and once the last bridge guest is down its sockets are as before it."""
    d = start(host, tmp_path, ra=True)
    try:
        pid = d.proc.pid
        assert packet_sockets(pid) == 0
        a, ra = lab.bridged("a", 21)
        own(lab, a, ra, 5.0)
        assert packet_sockets(pid) == 2  # the sender and the bridge's listener
        host.fireroute("down", "a")
        assert wait_for(lambda: packet_sockets(pid) == 0, 5.0)
    finally:
        d.stop()
    assert d.proc.returncode == 0
    assert not [x for x in d.lines() if x.get("event", "").startswith("ra")], d.lines()
