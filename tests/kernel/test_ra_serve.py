"""The daemon's router advertisements (serve/ra.py): ``fireroute serve`` with IPv6 allowed
runs the responder itself. An unmodified guest (tests/kernel/tapwire.py, default sysctls)
wired to the tap of a v6 VM made through the daemon takes SLAAC from it and sees the RDNSS
servers of the daemon's config in the RA (read with a raw socket in the guest); a VM removed
through the daemon gets no more RAs, even when a v4-only VM of the same name (the same tap
name) comes back; a daemon whose config gives no IPv6 sends none (beside the control with
``"ra": true``); stopping the daemon stops the responder, and VMs coming and going leave no
socket or thread behind."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_ra import Lab, eui64, wait_for
from tests.kernel.test_serve import Daemon

pytestmark = pytest.mark.privileged

POOL = "172.16.0.0/16"
DNS6 = ["2001:db8::53", "2001:db8::54"]

LISTEN = r"""
import json, select, socket, struct, sys, time
seconds = float(sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
words = [0xFFFFFFFF] * 8
words[134 >> 5] &= ~(1 << (134 & 31)) & 0xFFFFFFFF  # router advertisements only
s.setsockopt(socket.IPPROTO_ICMPV6, 1, struct.pack("8I", *words))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
index = socket.if_nametoindex("eth0")
end = time.monotonic() + 15  # a link just up has no multicast route until its carrier is handled
while True:
    try:
        s.sendto(struct.pack("!BBHI", 133, 0, 0, 0), ("ff02::2", 0, 0, index))
        break
    except OSError:
        if time.monotonic() > end:
            raise
        time.sleep(0.1)
end, got = time.monotonic() + seconds, []
while time.monotonic() < end:
    ready, _, _ = select.select([s], [], [], max(0.0, end - time.monotonic()))
    if not ready:
        break
    data, peer = s.recvfrom(2048)
    got.append({"from": peer[0].partition("%")[0], "hex": data.hex()})
    if len(sys.argv) > 2:  # the first one is enough
        break
print(json.dumps(got))
"""


ANSWERED = 15.0
"""how long a guest waits for an answer it must get (it stops at the first)"""


def listen(ns: str, seconds: float, first: bool = True) -> list[dict]:
    """Solicit from the guest ``ns`` and list the RAs it receives within ``seconds`` (the
    first only, with ``first``): each one's source and bytes."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN, str(seconds)]
    return json.loads(sh(*argv, *(["first"] if first else [])).stdout)


def options(message: bytes) -> dict[int, bytes]:
    """An RA's options by type (after its 16-byte header)."""
    out, at = {}, 16
    while at + 2 <= len(message) and message[at + 1]:
        length = message[at + 1] * 8
        out[message[at]] = message[at : at + length]
        at += length
    return out


def rdnss(message: bytes) -> list[IPv6Address]:
    opt = options(message).get(25)
    if opt is None:
        return []
    return [IPv6Address(opt[i : i + 16]) for i in range(8, len(opt), 16)]


def own_sockets(pid: int) -> tuple[int, int]:
    """(sockets, threads) of process ``pid``."""
    fds = os.listdir(f"/proc/{pid}/fd")
    sockets = sum(
        1
        for fd in fds
        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        if os.path.exists(f"/proc/{pid}/fd/{fd}")
    )
    return sockets, len(os.listdir(f"/proc/{pid}/task"))


@pytest.fixture
def lab(host: Host) -> Iterator[Lab]:
    with contextlib.closing(Lab(host)) as lab:
        yield lab


def start(host: Host, tmp: Path, **config: object) -> Daemon:
    config = {"fixed": {"pool": POOL}, **config}
    return Daemon(host, tmp, config=config)


def put(d: Daemon, name: str, body: dict) -> dict:
    status, vm = d.client().call("PUT", f"/vms/{name}", body)
    assert status == 200, vm
    return vm  # type: ignore[return-value]


def test_a_guest_of_a_vm_made_through_the_daemon_takes_slaac_and_rdnss(
    lab: Lab, host: Host, tmp_path: Path
):
    d = start(host, tmp_path, fixed={"pool": POOL, "ipv6": True}, dns6=DNS6)
    try:
        listening = [x for x in d.lines() if x.get("event") == "listening"]
        assert listening and listening[0]["ra"] is True, d.lines()
        rec = put(d, "six", {})
        assert rec["ipv6"] is not None
        ns = lab.wire(rec)
        got = listen(ns, ANSWERED)
        gateway = rec["ipv6"]["gateway"]  # the VM's own (fe80::1:…), the RA's source
        assert gateway.startswith("fe80::1:") and got and got[0]["from"] == gateway, got
        message = bytes.fromhex(got[0]["hex"])
        assert rdnss(message) == [IPv6Address(a) for a in DNS6]
        prefix = IPv6Network(rec["ipv6"]["block"]).network_address.packed
        assert options(message)[3][16:32] == prefix
        want = eui64(rec["ipv6"]["block"], rec["mac"])
        found = wait_for(lambda: lab.slaac(ns), 5.0)
        assert [IPv6Address(a["local"]) for a in found] == [want]  # type: ignore[union-attr]
        assert [r["gateway"] for r in wait_for(lambda: lab.ra_routes(ns), 2.0)] == [gateway]  # type: ignore[union-attr]
    finally:
        d.stop()
    assert d.proc.returncode == 0
    assert not [x for x in d.lines() if x.get("event", "").startswith("ra")], d.lines()


def test_a_vm_removed_through_the_daemon_gets_no_more_ras(lab: Lab, host: Host, tmp_path: Path):
    d = start(host, tmp_path, client_options=["ipv6"])
    try:
        rec = put(d, "web", {"ipv6": True})
        ns = lab.wire(rec)
        assert listen(ns, ANSWERED), "the control: the v6 VM's guest is answered"
        pid = d.proc.pid
        before = own_sockets(pid)
        for _ in range(3):  # VMs come and go: the responder's one socket and thread stay
            assert d.client().call("DELETE", "/vms/web") == (200, {"removed": True})
            rec = put(d, "web", {"ipv6": True})
        assert d.client().call("DELETE", "/vms/web") == (200, {"removed": True})
        rec4 = put(d, "web", {})  # the same name, the same tap name: IPv4 only now
        assert rec4["tap"] == rec["tap"] and rec4["ipv6"] is None
        ns4 = lab.wire(rec4)
        assert listen(ns4, 3.0, first=False) == []
        assert lab.slaac(ns4) == []
        # nor did the responder try (and fail: it logs each failure) to send one there
        assert not [x for x in d.lines() if x.get("event", "").startswith("ra")], d.lines()
        assert wait_for(lambda: own_sockets(pid) == before, 5.0), (own_sockets(pid), before)
        # and a v6 VM made after it is advertised on at once (its tap with carrier first)
        rec6 = put(d, "late", {"ipv6": True})
        ns6 = lab.wire(rec6)
        want = eui64(rec6["ipv6"]["block"], rec6["mac"])
        found = wait_for(lambda: lab.slaac(ns6), 8.0)
        assert [IPv6Address(a["local"]) for a in found] == [want]  # type: ignore[union-attr]
    finally:
        d.stop()
    assert d.proc.returncode == 0


def test_a_daemon_without_ipv6_sends_no_ras_unless_told(lab: Lab, host: Host, tmp_path: Path):
    """A v6 VM made by the CLI in the daemon's state file: a daemon whose VMs cannot have
    IPv6 does not advertise on its tap; the control, ``"ra": true``, does, until it stops."""
    rec = lab.up("cli6", "--ipv6")
    ns = lab.wire(rec)
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    d = start(host, tmp_path / "off")
    try:
        assert [x["ra"] for x in d.lines() if x.get("event") == "listening"] == [False]
        assert listen(ns, 3.0, first=False) == []
    finally:
        d.stop()
    d = start(host, tmp_path / "on", ra=True)
    try:
        got = listen(ns, ANSWERED)
        assert got and got[0]["from"] == rec["ipv6"]["gateway"]
        assert rdnss(bytes.fromhex(got[0]["hex"])) == []  # (no dns6: no RDNSS option)
        assert wait_for(lambda: lab.slaac(ns), 5.0)
    finally:
        d.stop()
    assert d.proc.returncode == 0
    assert listen(ns, 3.0, first=False) == []  # stopped with the daemon


def test_fireroute_ra_names_its_dns6_servers_in_each_ra(lab: Lab):
    """The CLI's responder: ``--dns6`` as RDNSS (RFC 8106: type 25, lifetime 1800 s, the
    servers in order), beside the control that without it the RA has no RDNSS option."""
    rec = lab.up("six", "--ipv6")
    ns = lab.wire(rec)
    lab.start_responder()
    got = listen(ns, ANSWERED)
    assert got and 25 not in options(bytes.fromhex(got[0]["hex"]))
    lab.stop_responder()
    lab.start_responder("--dns6", DNS6[1], "--dns6", DNS6[0])
    got = listen(ns, ANSWERED)
    message = bytes.fromhex(got[0]["hex"])
    assert rdnss(message) == [IPv6Address(DNS6[1]), IPv6Address(DNS6[0])]
    assert options(message)[25][:8] == bytes.fromhex("1905000000000708")
    code, _, err = lab.stop_responder()
    assert (code, err) == (0, "")
