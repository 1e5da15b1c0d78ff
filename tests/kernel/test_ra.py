"""fireroute's own router advertisements (docs/ipv6-plan.md 1.6, F10): ``fireroute ra`` in the
host namespace answers a guest wired to a v6 VM's tap (tests/kernel/tapwire.py; the guest keeps
its default sysctls, accept_ra=1 and autoconf=1, and is given no IPv6 address) so that it takes
a SLAAC address in the VM's /64 and ``default via`` its gateway ``proto ra``. Beside it the
controls: a v4-only VM's guest gets nothing while the responder runs, and without the responder
the v6 guest gets nothing either (the advertisement is fireroute's)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv6Address, IPv6Network

import pytest

from tests.conftest import Host, sh
from tests.kernel import test_isolation6 as isolation6

pytestmark = pytest.mark.privileged

RS = r"""
import socket, struct, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
end = time.monotonic() + 15  # a link just up has no multicast route until its carrier is handled
while True:
    try:  # type 133, code 0, checksum (the kernel's), reserved
        s.sendto(struct.pack("!BBHI", 133, 0, 0, 0),
                 ("ff02::2", 0, 0, socket.if_nametoindex("eth0")))
        break
    except OSError as e:
        print(e, flush=True)
        if time.monotonic() > end:
            raise SystemExit("no solicitation sent")
        time.sleep(0.1)
"""


def wait_for(check: Callable[[], object], timeout: float) -> object:
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > end:
            return got
        time.sleep(0.1)


def eui64(prefix: str, mac: str) -> IPv6Address:
    """The SLAAC address of ``mac`` in the /64 ``prefix`` (RFC 4291 appendix A)."""
    b = bytearray.fromhex(mac.replace(":", ""))
    b[0] ^= 0x02
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return IPv6Address(IPv6Network(prefix).network_address.packed[:8] + iid)


class Lab(isolation6.Lab):
    """test_isolation6's lab (the uplink speaks IPv6 to the internet namespace), whose guests
    are given no IPv6 address: they take it from the responder."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.responder: subprocess.Popen | None = None
        self.said: list[str] = []
        """the lines the responder printed so far (one per RA it sent, as it sent it)"""
        self.reader: threading.Thread | None = None
        self.gateways: dict[str, str] = {}
        """each wired guest's IPv6 gateway, as fireroute says it (a bridge's: fe80::1)"""

    def wire(self, rec: dict) -> str:
        ns = self.wired.guest(rec["tap"], rec["mac"])
        self.gateways[ns] = (rec.get("ipv6") or {}).get("gateway") or "fe80::1"
        return ns

    def start_responder(self, *args: str) -> subprocess.Popen:
        env = {**os.environ, "FIREROUTE_STATE": str(self.host.state)}
        argv = ["nsenter", f"--net=/var/run/netns/{self.host.ns}", sys.executable, "-m"]
        p = subprocess.Popen(
            [*argv, "fireroute", "ra", "--verbose", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert p.stderr is not None
        assert "answering on the v6 taps" in p.stderr.readline()
        self.responder, self.said = p, []
        self.reader = threading.Thread(target=self._read, args=(p, self.said), daemon=True)
        self.reader.start()
        return p

    @staticmethod
    def _read(p: subprocess.Popen, said: list[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            said.append(line.rstrip("\n"))

    def heard(self, *words: str, since: int = 0, timeout: float = 15.0) -> int:
        """Wait until a line the responder printed (its ``since``-th or a later one) holds
        every one of ``words``; how many lines it had printed then."""
        deadline = time.monotonic() + timeout
        while True:
            lines = list(self.said)
            if any(all(w in line for w in words) for line in lines[since:]):
                return len(lines)
            assert time.monotonic() < deadline, f"the responder never said {words}: {lines}"
            time.sleep(0.05)

    def stop_responder(self) -> tuple[int, str, str]:
        """SIGTERM: the exit code, what it printed (one line per RA) and its errors."""
        p, reader = self.responder, self.reader
        assert p is not None and p.stderr is not None and reader is not None
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        reader.join(10)
        err = p.stderr.read()
        self.responder = self.reader = None
        return p.returncode, "".join(line + "\n" for line in self.said), err

    def slaac(self, ns: str) -> list[dict]:
        doc = json.loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", "eth0").stdout)
        return [a for d in doc for a in d.get("addr_info", []) if a.get("scope") == "global"]

    def ra_routes(self, ns: str) -> list[dict]:
        doc = json.loads(sh("ip", "-n", ns, "-j", "-6", "route", "show", "default").stdout)
        return [r for r in doc if r.get("protocol") == "ra"]

    def solicit(self, ns: str) -> None:
        """The guest sends a router solicitation from its link-local address (as its kernel
        does when eth0 comes up; flapping eth0 would break the wire's veth instead)."""
        sh("ip", "netns", "exec", ns, sys.executable, "-c", RS)

    def answered(self, ns: str, rec: dict) -> None:
        """The guest in ``ns`` (of VM ``rec``) solicits, and the responder has sent it its
        answer."""
        since = len(self.said)
        self.solicit(ns)
        self.heard(f"{rec['tap']} (vm {rec['name']})", "(solicited)", since=since)

    def arrived(self, ns: str) -> None:
        """The control of a "nothing arrived": the guest in ``ns`` pings its gateway and the
        reply comes back through its tap, so whatever was written onto that tap before (an RA
        the responder sent, say) has reached the guest and been handled (the tap and its wire
        keep their order)."""
        gateway = f"{self.gateways[ns]}%eth0"
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", isolation6.PING6, gateway]
        deadline = time.monotonic() + 15
        while (ping := sh(*argv, check=False)).returncode != 0:
            assert time.monotonic() < deadline, f"no reply from the gateway: {ping.stdout}"

    def close(self) -> None:
        if self.responder is not None:
            self.responder.kill()
            self.responder.wait()
        super().close()


@pytest.fixture
def lab(host: Host) -> Iterator[Lab]:
    with contextlib.closing(Lab(host)) as lab:
        yield lab


def test_a_v6_guest_configures_itself_from_fireroutes_ra(lab: Lab):
    rec6 = lab.up("six", "--ipv6")
    rec4 = lab.up("four")
    g6, g4 = lab.wire(rec6), lab.wire(rec4)
    # without the responder: the guest solicits and nobody answers
    lab.solicit(g6)
    assert wait_for(lambda: lab.slaac(g6), 3.0) == []
    assert lab.ra_routes(g6) == []

    lab.start_responder()
    want = eui64(rec6["ipv6"]["block"], rec6["mac"])
    gateway = rec6["ipv6"]["gateway"]  # its own: fe80::1 and its block's bits
    assert IPv6Address(gateway) in IPv6Network("fe80::1:0:0:0/80"), gateway
    got = wait_for(lambda: lab.slaac(g6), 5.0)
    assert [(IPv6Address(a["local"]), a["prefixlen"]) for a in got] == [(want, 64)]
    assert IPv6Network(f"{want}/64", strict=False) == IPv6Network(rec6["ipv6"]["block"])
    routes = wait_for(lambda: lab.ra_routes(g6), 2.0)
    assert [(r["gateway"], r["dev"]) for r in routes] == [(gateway, "eth0")]
    # over that address and route the guest reaches the internet, masqueraded as IPv4 is
    lab.serve(lab.host.inet, f"[{isolation6.INTERNET6}]:8080")
    assert lab.connect(g6, isolation6.INTERNET6, 8080, str(want)) == f"hello {isolation6.UPLINK6}"
    # the v4-only VM's guest, wired and soliciting while the responder runs, gets nothing:
    # its ping of the gateway, after the solicitation on the same wire, came back (so the
    # host had the solicitation), then the v6 guest's next one was answered (so the responder
    # had judged it: what it sends it prints, and it printed nothing for the v4 tap)
    sh("ip", "-n", g4, "addr", "add", f"{rec4['guest_ip']}/{rec4['prefix']}", "dev", "eth0")
    lab.solicit(g4)
    sh("ip", "netns", "exec", g4, "busybox", "ping", "-c1", "-W5", rec4["tap_ip"])
    lab.answered(g6, rec6)
    assert not any(rec4["tap"] in line for line in lab.said), lab.said
    assert lab.slaac(g4) == []
    assert lab.ra_routes(g4) == []

    code, out, err = lab.stop_responder()
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines and all(rec6["tap"] in line for line in lines), out
    assert not any(rec4["tap"] in line for line in lines)
    assert "(periodic)" in out  # the advertisement at start, to each v6 tap with carrier


def test_a_proxy_ndp_guest_is_advertised_the_route_and_no_prefix(lab: Lab):
    """A ``--proxy-ndp`` VM's /64: the uplink answers the upstream for its ``::2`` alone, so
    the responder's RA offers no prefix (a SLAAC address there would be unreachable) and
    gives the route; the control, a plain v6 VM in the same run, takes its SLAAC address."""
    proxied = lab.up("px", "--ipv6", "--pool6", "2001:db8:300::/56", "--proxy-ndp")
    plain = lab.up("plain", "--ipv6")
    gp, g6 = lab.wire(proxied), lab.wire(plain)
    lab.start_responder()
    lab.solicit(gp)
    lab.solicit(g6)
    want = eui64(plain["ipv6"]["block"], plain["mac"])
    got = wait_for(lambda: lab.slaac(g6), 5.0)
    assert [(IPv6Address(a["local"]), a["prefixlen"]) for a in got] == [(want, 64)]
    routes = wait_for(lambda: lab.ra_routes(gp), 5.0)
    assert [(r["gateway"], r["dev"]) for r in routes] == [(proxied["ipv6"]["gateway"], "eth0")]
    assert lab.slaac(gp) == []  # the route, and no prefix to take an address from
    code, out, err = lab.stop_responder()
    assert (code, err) == (0, "") and proxied["tap"] in out, out


def test_a_solicitation_from_a_vm_up_after_the_responder_is_answered(lab: Lab):
    """The responder learns a tap it did not know from the state file when its guest
    solicits, and answers the solicitation (not the periodic advertisement)."""
    lab.start_responder()
    rec = lab.up("late", "--ipv6")
    ns = lab.wire(rec)
    lab.solicit(ns)
    want = eui64(rec["ipv6"]["block"], rec["mac"])
    got = wait_for(lambda: lab.slaac(ns), 5.0)
    assert [IPv6Address(a["local"]) for a in got] == [want]
    routes = wait_for(lambda: lab.ra_routes(ns), 2.0)
    assert [r["gateway"] for r in routes] == [rec["ipv6"]["gateway"]]  # type: ignore[union-attr]
    _, out, _ = lab.stop_responder()
    assert f"{rec['tap']} (vm late)" in out and "(solicited)" in out, out


def test_a_tap_that_gains_carrier_after_the_start_is_advertised_on_then(lab: Lab):
    """A v6 tap without carrier at the responder's start (no VMM yet) is looked at again and
    advertised on once its VMM (here the wire) holds it open."""
    rec = lab.up("early", "--ipv6")
    lab.start_responder()
    time.sleep(1.0)  # the start's look found the tap without carrier
    ns = lab.wire(rec)
    want = eui64(rec["ipv6"]["block"], rec["mac"])
    got = wait_for(lambda: lab.slaac(ns), 8.0)
    assert [IPv6Address(a["local"]) for a in got] == [want]  # (its solicitation answered)
    # the next look (5 s after the start) advertises on it: waited for, as long as it takes
    lab.heard(f"{rec['tap']} (vm early) {rec['ipv6']['block']} to ff02::1 (periodic)")
    _, out, _ = lab.stop_responder()
    assert f"{rec['tap']} (vm early) {rec['ipv6']['block']} to ff02::1 (periodic)" in out, out
