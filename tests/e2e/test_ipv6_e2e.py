"""End to end: IPv6 (issue 24) proven with booted guests.

One :class:`~fireroute.lab.sandbox.Sandbox` whose uplink also speaks IPv6 to the "internet"
namespace (which has no route back to the guests' unique local /64s: replies come only through
NAT66) runs the real CLI and ``fireroute ra`` (the router advertisement responder); four QEMU
guests boot in parallel on the taps fireroute made:

- ``script``: ``up --ipv6``; it ignores router advertisements (``fireroute.v6=script``) and is
  given no ``ip=``: fireroute's guest script (``show --format guest-script``), run in it,
  configures both families;
- ``slaac``: ``up --ipv6 --allow-peers``; IPv4 from ``ip=``, IPv6 from the responder's
  advertisements only (the kernel's defaults, SLAAC);
- ``peer``: as ``script``, with ``--allow-peers`` and ``--allow-host-port 2223/tcp`` (the
  positive controls of the refusals);
- ``four``: no ``--ipv6``, the same kernel settings as ``slaac``: it would take an
  advertisement if one came.

Each refusal is beside the control that the same path works when allowed. Nothing touches the
root network namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from subprocess import PIPE
from typing import IO

import pytest

from fireroute.lab.guest import GuestImage, v6_boot_arg
from fireroute.lab.sandbox import HOST_UPLINK_IP, Sandbox
from fireroute.lab.vmm import Guest
from tests.e2e.common import E2E_MARKS, report
from tests.e2e.test_modes_e2e import LISTEN, boot_all, fetch_ok, up
from tests.e2e.test_publish_e2e import connect
from tests.kernel.test_isolation6 import INTERNET6, SERVER, UPLINK6
from tests.kernel.test_ra import eui64

pytestmark = E2E_MARKS

TABLE = "firecracker"
#: name -> (options of ``up``, how the guest takes IPv6: None for a v4-only VM)
VMS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "script": (("--ipv6",), "script"),
    "slaac": (("--ipv6", "--allow-peers"), "slaac"),
    "peer": (("--ipv6", "--allow-peers", "--allow-host-port", "2223/tcp"), "script"),
    "four": ((), None),
}
PAGE = "hello-over-ipv6"
CLOSED, OPEN = 2222, 2223  # host ports: 2223/tcp allowed for "peer" only
#: A guest's kernel solicits routers when its link comes up, then 4 s and 12 s later
#: (rtr_solicit_interval, doubling): three solicitations in 12 s.
RS_INTERVALS = 12.0


def fetch6(guest: Guest) -> tuple[bool, str]:
    """The guest's raw HTTP/1.0 GET of the internet's IPv6 page, tagged with its name."""
    request = f"GET /page.txt?from={guest.name} HTTP/1.0"
    status, out = guest.run(rf"printf '{request}\r\n\r\n' | nc -w 3 {INTERNET6} 80", timeout=15)
    return status == 0 and PAGE in out, f"[exit {status}]\n{out}"


def tcp(guest: Guest, addr: str, port: int) -> str:
    """What a connection from ``guest`` to ``addr``:``port`` reads ("" when it fails)."""
    status, out = guest.run(f"nc -w 2 {addr} {port} </dev/null", timeout=15)
    return out.strip() if status == 0 else ""


def ping6(guest: Guest, addr: str) -> tuple[int, str]:
    return guest.run(f"ping -c1 -W3 {addr}", timeout=15)


def addrs6(guest: Guest, scope: str) -> list[str]:
    """The guest's eth0 IPv6 addresses of ``scope`` ("global" or "link"), as ADDR/LEN."""
    status, out = guest.run("ip -6 addr show dev eth0")
    assert status == 0, out
    return re.findall(rf"inet6 (\S+) scope {scope}\b", out)


def routes6(guest: Guest) -> str:
    status, out = guest.run("ip -6 route show")
    assert status == 0, out
    return out


class Responder:
    """``fireroute ra --verbose`` in the host namespace; the lines it prints (one per
    advertisement, flushed) are collected as they come."""

    def __init__(self, sb: Sandbox) -> None:
        env = {**os.environ, "FIREROUTE_STATE": str(sb.state)}
        argv = sb.fireroute_argv("ra", "--verbose")
        self.p = subprocess.Popen(argv, stdout=PIPE, stderr=PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        assert self.p.stdout is not None and self.p.stderr is not None
        self.reader = threading.Thread(target=self._read, args=(self.p.stdout,), daemon=True)
        self.reader.start()
        first = self.p.stderr.readline()
        if "answering on the v6 taps" not in first:
            self.stop()
            raise AssertionError(f"fireroute ra did not start: {first}")

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, text: str, timeout: float = 10.0) -> bool:
        """Until a line containing ``text`` was printed."""
        with self.cond:
            return self.cond.wait_for(lambda: any(text in x for x in self.lines), timeout)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM: its exit code, every line it printed and its errors."""
        self.p.send_signal(signal.SIGTERM)
        try:
            _, err = self.p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            _, err = self.p.communicate()
        self.reader.join(5)
        with self.cond:
            return self.p.returncode, "\n".join(self.lines), err


@dataclass
class Lab:
    sb: Sandbox
    server_log: Path
    records: dict[str, dict] = field(default_factory=dict)
    guests: dict[str, Guest] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    responder: Responder | None = None
    #: When every guest had printed its ready marker (its link was up by then).
    booted: float = 0.0

    def six(self, name: str) -> dict:
        six = self.records[name]["ipv6"]
        assert six is not None, f"{name} has no IPv6"
        return six

    def slaac_address(self) -> str:
        rec = self.records["slaac"]
        return str(eui64(rec["ipv6"]["block"], rec["mac"]))

    def start(self, ns: str, argv: list[str], **kwargs: object) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def start_servers(self, site: Path) -> None:
        """The internet's HTTP server on its IPv6 address (logging each request to
        ``server_log``, the client's address first), and the host's TCP ports."""
        http = [sys.executable, "-m", "http.server", "-b", INTERNET6, "-d", str(site), "80"]
        with open(self.server_log, "w") as log:
            self.start(self.sb.internet, http, stdout=subprocess.DEVNULL, stderr=log)
        host_ports = [f"[::]:{CLOSED}", f"[::]:{OPEN}"]  # each answers "hello PEER"
        server = self.start(self.sb.host, [sys.executable, "-c", SERVER, *host_ports], stdout=PIPE)
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"

    def clients_seen(self) -> dict[str, str]:
        """The internet's server log: the client address of each guest's request."""
        log = self.server_log.read_text()
        seen = re.findall(r'^(\S+) .*"GET /page\.txt\?from=(\w+) ', log, re.M)
        return {name: client for client, name in seen}

    def close(self) -> None:
        for guest in self.guests.values():
            guest.stop()
        if self.responder is not None:
            self.responder.stop()
        for p in self.procs:
            p.kill()
            p.wait()


def until(guest: Guest, condition: str, timeout: float = 20.0) -> tuple[int, str]:
    """Run the shell ``condition`` in the guest until it holds (0.2 s apart)."""
    tries = int(timeout / 0.2)
    return guest.run(
        f"for i in $(seq {tries}); do ( {condition} ) && exit 0; sleep 0.2; done; exit 1",
        timeout=timeout + 10,
    )


def settled(guest: Guest, global_address: str) -> tuple[int, str]:
    """Until ``global_address`` is on eth0 and no address of eth0 is tentative (DAD)."""
    return until(
        guest,
        f"ip -6 addr show dev eth0 | grep -q 'inet6 {global_address}/64 scope global' && "
        "! ip -6 addr show dev eth0 | grep -q tentative",
    )


def internet6(sb: Sandbox, tmp: Path) -> Path:
    """The uplink's and the internet's IPv6 addresses (the host's default route via the
    internet; none back to the guests), the page the internet serves, and the path of its
    server's log."""
    sb.exec(sb.host, "ip", "-6", "addr", "add", f"{UPLINK6}/64", "dev", "up0", "nodad")
    sb.exec(sb.host, "ip", "-6", "route", "add", "default", "via", INTERNET6, "dev", "up0")
    sb.exec(sb.internet, "ip", "-6", "addr", "add", f"{INTERNET6}/64", "dev", "down0", "nodad")
    site = tmp / "site"
    site.mkdir()
    (site / "page.txt").write_text(PAGE + "\n")
    return tmp / "http6.log"


# --- the fixture ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(
    request: pytest.FixtureRequest, image: GuestImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("lab-ipv6")
    with Sandbox(prefix="frtest-v6") as sb:
        sb.state = tmp / "state.db"
        sb.start_http()  # the IPv4 page (the v4-only guest's control)
        lab = Lab(sb, internet6(sb, tmp))
        try:
            lab.start_servers(tmp / "site")
            for name, (options, _) in VMS.items():
                lab.records[name] = up(sb, name, *options)
            lab.responder = Responder(sb)  # running before the guests boot, as in use
            started = time.monotonic()
            lab.guests = boot_guests(image, lab, tmp)
            lab.booted = time.monotonic()
            report(request, f"[ipv6] 4 guests booted in {time.monotonic() - started:.2f}s")
            configure(lab)
            report(request, f"[ipv6] ready in {time.monotonic() - started:.2f}s; logs in {tmp}")
            yield lab
        finally:
            lab.close()
            teardown = sb.fireroute("teardown", check=False)
            assert teardown.returncode == 0, teardown.stderr


def boot_guests(image: GuestImage, lab: Lab, logs: Path) -> dict[str, Guest]:
    """Boot every VM's guest in parallel, each with how it takes IPv6 (``fireroute.v6=``); a
    "script" guest gets no ``ip=``: the guest script configures its IPv4 too."""
    specs = []
    for name, (_, v6) in VMS.items():
        rec = dict(lab.records[name])
        boot = [] if v6 == "script" else [rec["boot_args"]]
        rec["boot_args"] = " ".join([*boot, v6_boot_arg(v6 or "slaac")])
        specs.append((lab.sb.host, name, rec))
    return {g.name: g for g in boot_all(image, specs, logs)}


def configure(lab: Lab) -> None:
    """The SLAAC guest configures itself from the responder that ran while it booted; the
    script guests run fireroute's guest script. Then the responder starts again: at its start
    it advertises on every v6 tap with carrier, now that the script guests' links are up too
    (they ignore it). Returns once no guest address is tentative."""
    sb, responder = lab.sb, lab.responder
    assert responder is not None
    status, out = settled(lab.guests["slaac"], lab.slaac_address())
    assert status == 0, f"slaac took no address from the advertisements:\n{out}"
    assert responder.wait_for(f"{lab.records['slaac']['tap']} (vm slaac)")
    lab.responder = None
    responder.stop()
    scripted = [name for name, (_, v6) in VMS.items() if v6 == "script"]
    for name in scripted:
        script = sb.fireroute("show", name, "--format", "guest-script").stdout
        status, out = lab.guests[name].run(script)
        assert status == 0, f"{name}: the guest script failed:\n{out}"
    lab.responder = Responder(sb)
    for name in scripted:
        assert lab.responder.wait_for(f"{lab.records[name]['tap']} (vm {name})"), name
        status, out = settled(lab.guests[name], lab.six(name)["address"])
        assert status == 0, f"{name} has no {lab.six(name)['address']} (or DAD never ended):\n{out}"
    wait_for_http(sb)


def wait_for_http(sb: Sandbox) -> None:
    probe = (
        "import socket, time\n"
        "for _ in range(100):\n"
        "    try:\n"
        f"        socket.create_connection(({INTERNET6!r}, 80), 0.5).close(); break\n"
        "    except OSError:\n"
        "        time.sleep(0.05)\n"
        "else:\n"
        "    raise SystemExit('the IPv6 HTTP server did not start')\n"
    )
    sb.exec(sb.internet, sys.executable, "-c", probe)


# --- the proof -----------------------------------------------------------------------------------


def test_v6_guests_configure_and_ping_their_gateway(lab: Lab) -> None:
    """The script guests (which ignore advertisements: ``fireroute.v6=script``) hold exactly
    the address and the static default route their script gave them; the SLAAC guest holds
    its EUI-64 address in its own /64 and a default route via its gateway (its own: fe80::1
    and its block's bits) learnt from the responder (it expires). Both kinds ping their
    gateway and beyond it."""
    shown = json.loads(lab.sb.fireroute("show", "script", "--json").stdout)
    shown = shown[0] if isinstance(shown, list) else shown
    assert shown["ipv6"] == lab.six("script")
    for name, (_, v6) in VMS.items():
        status, out = lab.guests[name].run("cat /proc/sys/net/ipv6/conf/eth0/accept_ra")
        assert (status, out.strip()) == (0, "0" if v6 == "script" else "1"), name
    for name in ("script", "peer"):
        six = lab.six(name)
        assert IPv6Address(six["address"]) in IPv6Network(six["block"])
        assert addrs6(lab.guests[name], "global") == [f"{six['address']}/64"], name
        (default,) = re.findall(r"^default .*", routes6(lab.guests[name]), re.M)
        assert default.startswith(f"default via {six['gateway']} dev eth0 "), default
        assert "expires" not in default, f"{name}: a default route from an advertisement"
    slaac, six = lab.guests["slaac"], lab.six("slaac")
    assert addrs6(slaac, "global") == [f"{lab.slaac_address()}/64"]
    assert IPv6Address(lab.slaac_address()) in IPv6Network(six["block"])
    assert f"{six['block']} dev eth0" in routes6(slaac)
    learnt = rf"^default via {re.escape(six['gateway'])} dev eth0 .*expires"
    assert re.search(learnt, routes6(slaac), re.M), (
        "no default route from an advertisement:\n" + routes6(slaac)
    )
    for name in ("script", "slaac"):
        gateway = lab.six(name)["gateway"]
        assert gateway.startswith("fe80::1:"), gateway
        for target in (f"{gateway}%eth0", INTERNET6):
            status, out = ping6(lab.guests[name], target)
            assert status == 0, f"{name} -> {target}:\n{out}"


def test_v6_guests_fetch_through_nat66(lab: Lab) -> None:
    """Every v6 guest gets the page from the internet's IPv6 server, which saw the host's
    uplink address, not the guest's; without the VM's masquerade entry the fetch fails (the
    internet has no route back), and ``restore`` puts it back."""
    for name in ("script", "slaac", "peer"):
        ok, transcript = fetch6(lab.guests[name])
        assert ok and "HTTP/1.0 200" in transcript, f"{name}: {transcript}"
    assert lab.clients_seen() == {name: UPLINK6 for name in ("script", "slaac", "peer")}
    sb, block = lab.sb, lab.six("slaac")["block"]
    element = f'{block.split("/")[0]} . "up0"'
    sb.exec(sb.host, "nft", f"delete element ip6 {TABLE} masq {{ {element} }}")
    try:
        ok, transcript = fetch6(lab.guests["slaac"])
        assert not ok, f"fetched without NAT66:\n{transcript}"
    finally:
        restored = sb.fireroute("restore", check=False)
    assert restored.returncode == 0, restored.stderr
    ok, transcript = fetch6(lab.guests["slaac"])
    assert ok, f"after restore: {transcript}"


def test_v6_guest_refused_towards_another_guest(lab: Lab) -> None:
    """A guest that does not allow peers is reached by none and reaches none over IPv6; two
    that both allow peers reach each other (the control, over the same taps)."""
    g = lab.guests
    for name in ("script", "peer", "slaac"):
        status, out = g[name].run(LISTEN.format(name=name), timeout=20)
        assert status == 0, out
    slaac6, script6, peer6 = lab.slaac_address(), lab.six("script")["address"], lab.six("peer")
    assert tcp(g["slaac"], script6, 8080) == "", "slaac reached script (which allows no peers)"
    assert tcp(g["script"], slaac6, 8080) == "", "script (no --allow-peers) reached slaac"
    assert tcp(g["slaac"], peer6["address"], 8080) == "hello-from-peer"
    assert tcp(g["peer"], slaac6, 8080) == "hello-from-slaac"
    assert connect(lab.sb, lab.sb.host, script6, 8080) == "hello-from-script"  # it listened


def test_v6_guest_refused_towards_the_host(lab: Lab) -> None:
    """No guest opens a connection to the host over IPv6, at its gateway or the uplink's address;
    the controls: the gateway answers pings, and ``--allow-host-port 2223/tcp`` opens exactly
    that port (for that guest)."""
    script, peer = lab.guests["script"], lab.guests["peer"]
    mine, theirs = (f"{lab.six(n)['gateway']}%eth0" for n in ("script", "peer"))
    for target in (mine, UPLINK6):
        assert tcp(script, target, CLOSED) == "", target
        assert tcp(script, target, OPEN) == "", target  # allowed for "peer" only
    for target in (theirs, UPLINK6):
        assert tcp(peer, target, CLOSED) == "", target
    assert connect(lab.sb, lab.sb.host, UPLINK6, CLOSED) == f"hello {UPLINK6}"  # it listens
    assert ping6(script, mine)[0] == 0
    assert tcp(peer, theirs, OPEN).startswith("hello fe80::")
    assert tcp(peer, UPLINK6, OPEN) == f"hello {lab.six('peer')['address']}"


def test_v4_only_guest_stays_v4_only(lab: Lab) -> None:
    """The v4-only VM's guest, whose kernel would take an advertisement, has after three
    solicitation intervals (while the responder served the SLAAC guest beside it) no global
    address, no IPv6 route but its link-local one, and no IPv6 path to its host; its IPv4
    works."""
    four, tap = lab.guests["four"], lab.records["four"]["tap"]
    assert lab.records["four"]["ipv6"] is None
    off = lab.sb.exec(lab.sb.host, "sysctl", "-n", f"net.ipv6.conf.{tap}.disable_ipv6")
    assert off.stdout.strip() == "1", "IPv6 is on on the v4-only VM's tap"
    time.sleep(max(0.0, lab.booted + RS_INTERVALS - time.monotonic()))
    assert addrs6(four, "link"), "IPv6 is on in the guest (its kernel made a link-local address)"
    assert addrs6(four, "global") == []
    assert "default" not in routes6(four)
    assert ping6(four, "fe80::1%eth0")[0] != 0
    assert f"client={HOST_UPLINK_IP}" in fetch_ok(four)
    gateway = f"{lab.six('slaac')['gateway']}%eth0"
    assert ping6(lab.guests["slaac"], gateway)[0] == 0  # (the control, again)


def test_v6_published_port_reached(lab: Lab) -> None:
    """A port published on every host address reaches the guest's ::2 over IPv6 from the
    internet; an unpublished port does not, and after ``unpublish`` neither does the first."""
    sb, peer = lab.sb, lab.guests["peer"]
    published = sb.fireroute("publish", "peer", "8081:8080", check=False)
    assert published.returncode == 0, published.stderr
    for addr in (UPLINK6, HOST_UPLINK_IP):  # (IPv4 as before; nc serves one connection)
        status, out = peer.run(LISTEN.format(name="peer"), timeout=20)
        assert status == 0, out
        assert connect(sb, sb.internet, addr, 8081) == "hello-from-peer", addr
    status, out = peer.run(LISTEN.format(name="peer"), timeout=20)
    assert status == 0, out
    assert connect(sb, sb.internet, UPLINK6, 8082).startswith("FAIL")  # not published
    unpublished = sb.fireroute("unpublish", "peer", "8081:8080", check=False)
    assert unpublished.returncode == 0, unpublished.stderr
    assert connect(sb, sb.internet, UPLINK6, 8081).startswith("FAIL")
    assert connect(sb, sb.host, lab.six("peer")["address"], 8080) == "hello-from-peer"  # (there)


def test_the_responder_advertised_on_the_v6_taps_only(lab: Lab) -> None:
    """Every v6 guest was sent advertisements (the script guests too, once their links were
    up), the v4-only guest none."""
    assert lab.responder is not None
    code, out, err = lab.responder.stop()
    lab.responder = None
    assert (code, err) == (0, ""), err
    for name, rec in lab.records.items():
        advertised = f"{rec['tap']} (vm {name})" in out
        assert advertised == (rec["ipv6"] is not None), f"{name}:\n{out}"
