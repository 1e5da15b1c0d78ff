"""End to end: fireroute's NAT networking, proven with booted guests, for both backends.

For each backend one :class:`~fireroute.lab.sandbox.Sandbox` (a "host" namespace with an
uplink to an "internet" namespace that has no route back to the guest pool) runs the real CLI:
``fireroute up vm1 --json`` and ``fireroute up vm2 --json``. Two guests boot in parallel on
the taps fireroute made, with the MAC and ``ip=`` boot argument fireroute rendered (the guest
applies ``ip=`` with klibc's ipconfig, so a wrong rendering fails). Every check is reported by
a guest or by the host namespace; each isolation/removal check has a negative control showing
it can fail. Nothing touches the root network namespace.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fireroute.lab.guest import GuestImage
from fireroute.lab.sandbox import HOST_UPLINK_IP, INTERNET_IP, Sandbox
from fireroute.lab.vmm import Guest, start_guest
from tests.e2e.common import E2E_MARKS, report

pytestmark = E2E_MARKS

REPO = Path(__file__).resolve().parents[2]
VMS = ("vm1", "vm2")
TABLE = "firecracker"  # fireroute's default nftables table
PAGE = "hello-from-internet"
HTTP_FETCH = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 " + f"{INTERNET_IP} 80"
#: A source address outside the pool and outside every subnet of the sandbox.
FOREIGN_SOURCE = "198.51.100.7"
LISTEN_PORT = 8080


# --- helpers -------------------------------------------------------------------------------------


def fireroute(sb: Sandbox, *args: str) -> subprocess.CompletedProcess:
    result = sb.fireroute(*args, check=False)
    assert result.returncode == 0, (
        f"fireroute {' '.join(args)} exited {result.returncode}: {result.stderr}{result.stdout}"
    )
    return result


def host_ping(sb: Sandbox, address: str) -> subprocess.CompletedProcess:
    return sb.exec(sb.host, "busybox", "ping", "-c1", "-W3", address, check=False)


def fetch(guest: Guest) -> tuple[bool, str]:
    """The guest's raw HTTP/1.0 GET of the internet page; (page received, transcript)."""
    status, output = guest.run(HTTP_FETCH, timeout=15)
    return status == 0 and PAGE in output, f"[exit {status}]\n{output}"


def comment_of(saved_line: str) -> str | None:
    """The ``-m comment --comment`` value of an iptables-save line (which quotes it)."""
    argv = shlex.split(saved_line)
    return argv[argv.index("--comment") + 1] if "--comment" in argv else None


def iptables_tags(sb: Sandbox) -> set[str]:
    saved = sb.exec(sb.host, "iptables-nft-save").stdout
    return {c for c in map(comment_of, saved.splitlines()) if c and c.startswith("fireroute:")}


def client_seen(output: str) -> str | None:
    match = re.search(PAGE + r" client=(\S+)", output)
    return match.group(1) if match else None


@dataclass
class Lab:
    sb: Sandbox
    backend: str
    records: dict[str, dict] = field(default_factory=dict)
    guests: dict[str, Guest] = field(default_factory=dict)

    def nft_json(self) -> list[dict]:
        out = self.sb.exec(self.sb.host, "nft", "-j", "list", "ruleset").stdout
        return json.loads(out)["nftables"]

    def antispoof_drops(self) -> int:
        """Packets counted by the nft rule that drops a tap's packets with a foreign source."""
        for item in self.nft_json():
            rule = item.get("rule")
            if not rule or rule["table"] != TABLE or rule["chain"] != "forward":
                continue
            text = json.dumps(rule["expr"])
            if '"@vms"' in text and '"drop"' in text:
                return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        raise AssertionError("fireroute's anti-spoofing rule is missing from the forward chain")

    def masquerade_rule(self, vm: str) -> list[str]:
        """iptables: the saved ``-A POSTROUTING ...`` rule tagged with ``vm``, as argv."""
        saved = self.sb.exec(self.sb.host, "iptables-nft-save", "-t", "nat").stdout
        for line in saved.splitlines():
            tag = "fireroute:" + self.records[vm]["owner_tag"]
            if line.startswith("-A POSTROUTING") and comment_of(line) == tag:
                return shlex.split(line)[1:]
        raise AssertionError(f"no MASQUERADE rule tagged for {vm}:\n{saved}")

    def remove_nat(self, vm: str) -> list[str]:
        """Remove only the masquerade of ``vm``, behind fireroute's back; returns the argv that
        puts it back."""
        rec = self.records[vm]
        if self.backend == "nft":
            elem = f'{rec["guest_ip"]} . "{rec["uplink"]}"'
            self.sb.exec(self.sb.host, "nft", f"delete element ip {TABLE} masq {{ {elem} }}")
            return ["nft", f'add element ip {TABLE} masq {{ {elem} comment "{vm}" }}']
        rule = self.masquerade_rule(vm)
        self.sb.exec(self.sb.host, "iptables-nft", "-t", "nat", "-D", *rule)
        return ["iptables-nft", "-t", "nat", "-A", *rule]

    def allow_guest_to_guest(self, src: str, dst: str) -> list[str]:
        """Open the forward path ``src`` tap -> ``dst`` tap; returns the argv that closes it."""
        a, b = self.records[src]["tap"], self.records[dst]["tap"]
        if self.backend == "nft":
            elem = f'"{a}" . "{b}"'
            self.sb.exec(self.sb.host, "nft", f"add element ip {TABLE} egress {{ {elem} }}")
            return ["nft", f"delete element ip {TABLE} egress {{ {elem} }}"]
        rule = ["FORWARD", "-i", a, "-o", b, "-j", "ACCEPT"]
        self.sb.exec(self.sb.host, "iptables-nft", "-I", *rule)
        return ["iptables-nft", "-D", *rule]


def boot_all(
    request: pytest.FixtureRequest, image: GuestImage, lab: Lab, logs: Path
) -> dict[str, Guest]:
    """Boot one guest per record, in parallel; on any failure stop the ones that booted."""

    def boot(vm: str) -> Guest:
        rec = lab.records[vm]
        return start_guest(
            image,
            netns=lab.sb.host,
            tap=rec["tap"],
            mac=rec["mac"],
            boot_args=rec["boot_args"],
            name=f"{lab.backend}-{vm}",
            log_path=logs / f"{lab.backend}-{vm}.log",
        )

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(lab.records)) as pool:
        futures = {vm: pool.submit(boot, vm) for vm in lab.records}
    guests, errors = {}, []
    for vm, future in futures.items():
        try:
            guests[vm] = future.result()
        except Exception as exc:  # noqa: BLE001 - reported below, after stopping the others
            errors.append(f"{vm}: {exc}")
    if errors:
        for guest in guests.values():
            guest.stop()
        pytest.fail("guest boot failed:\n" + "\n".join(errors))
    times = ", ".join(f"{vm} {g.boot_seconds:.2f}s" for vm, g in guests.items())
    report(
        request,
        f"[{lab.backend}] {len(guests)} guests booted in parallel in "
        f"{time.monotonic() - started:.2f}s ({times}); console logs in {logs}",
    )
    return guests


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["nft", "iptables"])
def lab(
    request: pytest.FixtureRequest, image: GuestImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"lab-{backend}")
    with Sandbox(prefix="frtest-nat") as sb:
        sb.state = tmp / "state.db"
        sb.start_http()
        lab = Lab(sb, backend)
        try:
            for vm in VMS:  # one by one: the second up finds the first VM's table/rules
                out = fireroute(sb, "up", vm, "--backend", backend, "--json").stdout
                (lab.records[vm],) = json.loads(out)
            lab.guests = boot_all(request, image, lab, tmp)
            yield lab
        finally:
            for guest in lab.guests.values():
                guest.stop()
            teardown = sb.fireroute("teardown", check=False)
            assert teardown.returncode == 0, teardown.stderr


# --- the proof -----------------------------------------------------------------------------------


def test_guests_use_what_fireroute_rendered(lab: Lab) -> None:
    """The boot argument and MAC used to boot are fireroute's, and the guest applied them."""
    for vm, rec in lab.records.items():
        shown = fireroute(lab.sb, "show", vm, "--format", "boot-args").stdout.strip()
        assert shown == rec["boot_args"]
        config = json.loads(fireroute(lab.sb, "show", vm, "--format", "firecracker-config").stdout)
        (iface,) = config["network-interfaces"]
        assert (iface["host_dev_name"], iface["guest_mac"]) == (rec["tap"], rec["mac"])
        assert rec["uplink"] == "up0" and rec["backend"] == lab.backend
        guest = lab.guests[vm]
        assert guest.net_status == "ok", guest.console_text
        status, output = guest.run("ip addr show dev eth0; ip route show default")
        assert status == 0, output
        assert f"link/ether {rec['mac'].lower()} " in output
        assert f"inet {rec['guest_ip']}/{rec['prefix']} " in output
        assert f"default via {rec['tap_ip']} " in output
    a, b = (lab.records[vm] for vm in VMS)
    assert a["tap_ip"] != b["tap_ip"] and a["guest_ip"] != b["guest_ip"], "two /30s expected"


def test_guests_ping_their_gateway(lab: Lab) -> None:
    for vm, guest in lab.guests.items():
        status, output = guest.run(f"ping -c1 -W3 {lab.records[vm]['tap_ip']}")
        assert status == 0, f"{vm}: {output}"


def test_guests_reach_internet_through_nat(lab: Lab) -> None:
    """Both guests get the page, and the internet saw the host's uplink address (NAT)."""
    for vm, guest in lab.guests.items():
        ok, transcript = fetch(guest)
        assert ok, f"{vm}: {transcript}"
        assert "HTTP/1.0 200" in transcript
        assert client_seen(transcript) == HOST_UPLINK_IP, f"{vm}: no NAT? {transcript}"


def test_host_reaches_guests(lab: Lab) -> None:
    """The host namespace pings each guest and connects to a TCP port the guest listens on."""
    for vm, guest in lab.guests.items():
        guest_ip = lab.records[vm]["guest_ip"]
        ping = host_ping(lab.sb, guest_ip)
        assert ping.returncode == 0, f"{vm}: {ping.stdout}{ping.stderr}"
        status, output = guest.run(
            f"(echo hello-from-{vm} | nc -l -p {LISTEN_PORT}) >/dev/null 2>&1 & "
            "for i in $(seq 25); do netstat -ltn | grep -q ':8080 ' && exit 0; sleep 0.2; done; "
            "exit 1"
        )
        assert status == 0, output
        client = (
            "import socket, sys\n"
            f"s = socket.create_connection(({guest_ip!r}, {LISTEN_PORT}), timeout=5)\n"
            "sys.stdout.write(s.makefile().readline())\n"
        )
        result = lab.sb.exec(lab.sb.host, sys.executable, "-c", client, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"hello-from-{vm}"


def test_guests_cannot_reach_each_other(lab: Lab) -> None:
    """fireroute's forward chain drops guest-to-guest traffic; opening that path by hand makes
    the same ping succeed (negative control: the check can fail)."""
    vm1, vm2 = lab.guests["vm1"], lab.guests["vm2"]
    ip1, ip2 = lab.records["vm1"]["guest_ip"], lab.records["vm2"]["guest_ip"]
    for guest, other in ((vm1, ip2), (vm2, ip1)):
        status, output = guest.run(f"ping -c1 -W2 {other}")
        assert status != 0, f"{guest.name} reached {other}:\n{output}"
    close = lab.allow_guest_to_guest("vm1", "vm2")
    try:
        status, output = vm1.run(f"ping -c1 -W3 {ip2}")
        assert status == 0, f"control: with the path opened vm1 should reach vm2:\n{output}"
    finally:
        lab.sb.exec(lab.sb.host, *close)
    status, output = vm1.run(f"ping -c1 -W2 {ip2}")
    assert status != 0, f"path closed again, yet vm1 reached vm2:\n{output}"


def test_spoofed_sources_never_leave(lab: Lab) -> None:
    """A guest sending from an address that is not its own (the other guest's, or one outside
    the pool) gets nothing to the internet; the same ping from its own address does.

    Counted in the internet namespace with an nft counter on ICMP echo requests, whatever their
    source (a spoof of the other guest's address would be masqueraded like a real packet).
    """
    sb, guest = lab.sb, lab.guests["vm1"]
    probe = "frprobe"
    sb.exec(
        sb.internet,
        "nft",
        f"add table ip {probe}\n"
        f"add chain ip {probe} pre {{ type filter hook prerouting priority -300; }}\n"
        f"add rule ip {probe} pre ip daddr {INTERNET_IP} icmp type echo-request counter\n",
    )

    def seen() -> int:
        out = sb.exec(sb.internet, "nft", "-j", "list", "table", "ip", probe).stdout
        rules = [i["rule"] for i in json.loads(out)["nftables"] if "rule" in i]
        return next(e["counter"]["packets"] for e in rules[0]["expr"] if "counter" in e)

    spoofs = [lab.records["vm2"]["guest_ip"], FOREIGN_SOURCE]
    drops_before = lab.antispoof_drops() if lab.backend == "nft" else 0
    try:
        status, output = guest.run(f"ping -c1 -W3 {INTERNET_IP}")
        assert status == 0, f"control ping from the guest's own address failed:\n{output}"
        assert seen() == 1, "the control ping was not counted in the internet namespace"
        for spoof in spoofs:
            status, output = guest.run(
                f"ip addr add {spoof}/32 dev eth0 && ping -c1 -W2 -I {spoof} {INTERNET_IP}; "
                f"rc=$?; ip addr del {spoof}/32 dev eth0; exit $rc"
            )
            assert status != 0, f"spoofed ping from {spoof} got an answer:\n{output}"
            assert "bad address" not in output.lower(), output
        assert seen() == 1, "a packet with a spoofed source reached the internet namespace"
        if lab.backend == "nft":  # and it was fireroute's rule that dropped them
            assert lab.antispoof_drops() - drops_before >= len(spoofs)
    finally:
        sb.exec(sb.internet, "nft", "delete", "table", "ip", probe, check=False)


def test_uplink_side_cannot_open_connections_to_guests(
    lab: Lab, request: pytest.FixtureRequest
) -> None:
    """Even when a neighbour routes the pool to the host, NAT mode forwards only replies to
    guests (the nft backend's ``oifname @taps drop``). The host itself still reaches them."""
    sb, ip1 = lab.sb, lab.records["vm1"]["guest_ip"]
    tap = lab.records["vm1"]["host_dev"]
    pool = "172.16.0.0/16"
    sb.exec(sb.internet, "ip", "route", "add", pool, "via", HOST_UPLINK_IP)
    try:
        ping = sb.exec(sb.internet, "busybox", "ping", "-c1", "-W2", ip1, check=False)
        assert ping.returncode != 0, f"the internet namespace reached {ip1}:\n{ping.stdout}"
        # the positive control: without fireroute's drop towards the tap, the same ping passes
        # (the guard after source NAT lets a reply go: it is not a guest's own connection)
        if lab.backend == "nft":
            sb.exec(sb.host, "nft", "flush", "chain", "ip", TABLE, "forward")
        else:
            tag = "fireroute:" + lab.records["vm1"]["owner_tag"]
            sb.exec(
                sb.host,
                "iptables-nft",
                "-D",
                "FORWARD",
                "-o",
                tap,
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "DROP",
            )
        unblocked = sb.exec(sb.internet, "busybox", "ping", "-c1", "-W2", ip1, check=False)
        assert unblocked.returncode == 0, f"control failed: {unblocked.stdout}"
    finally:
        sb.exec(sb.internet, "ip", "route", "del", pool, "via", HOST_UPLINK_IP)
        fireroute(sb, "restore")  # and what was removed is back
    assert sb.fireroute("check", check=False).returncode == 0
    assert host_ping(sb, ip1).returncode == 0, "control: the host namespace reaches vm1"


def test_removing_only_nat_breaks_egress(lab: Lab) -> None:
    """Negative control for the NAT check: delete just vm1's masquerade (the tap, its address
    and the forward rules stay) and the guest's fetch fails; put it back and it works."""
    guest, rec = lab.guests["vm1"], lab.records["vm1"]
    restore = lab.remove_nat("vm1")
    try:
        assert host_ping(lab.sb, rec["guest_ip"]).returncode == 0, "tap should still carry"
        status, output = guest.run(f"ping -c1 -W3 {rec['tap_ip']}")
        assert status == 0, f"gateway should still answer:\n{output}"
        ok, transcript = fetch(guest)
        assert not ok, f"fetch succeeded without NAT:\n{transcript}"
        ok, transcript = fetch(lab.guests["vm2"])
        assert ok and client_seen(transcript) == HOST_UPLINK_IP, f"vm2 lost NAT:\n{transcript}"
    finally:
        lab.sb.exec(lab.sb.host, *restore)
    ok, transcript = fetch(guest)
    assert ok and client_seen(transcript) == HOST_UPLINK_IP, f"NAT restored:\n{transcript}"


def test_down_removes_everything(lab: Lab) -> None:
    """``down vm1``: its tap and rules are gone, its guest can no longer fetch, vm2 still can.
    ``down vm2`` (the last one): the table/rules are gone and forwarding is off again."""
    sb = lab.sb
    fireroute(sb, "down", "vm1")
    links = json.loads(sb.exec(sb.host, "ip", "-j", "link", "show").stdout)
    assert lab.records["vm1"]["tap"] not in {link["ifname"] for link in links}
    ok, transcript = fetch(lab.guests["vm1"])
    assert not ok, f"vm1 fetched after down:\n{transcript}"
    ok, transcript = fetch(lab.guests["vm2"])
    assert ok and client_seen(transcript) == HOST_UPLINK_IP, f"vm2 after down vm1:\n{transcript}"
    if lab.backend == "nft":
        ruleset = sb.exec(sb.host, "nft", "list", "table", "ip", TABLE).stdout
        assert lab.records["vm1"]["guest_ip"] + " " not in ruleset, ruleset
    else:
        tags = iptables_tags(sb)
        tag1, tag2 = ("fireroute:" + lab.records[v]["owner_tag"] for v in ("vm1", "vm2"))
        assert tag1 not in tags and tag2 in tags, tags

    fireroute(sb, "down", "vm2")
    ok, transcript = fetch(lab.guests["vm2"])
    assert not ok, f"vm2 fetched after down:\n{transcript}"
    assert sb.exec(sb.host, "nft", "list", "table", "ip", TABLE, check=False).returncode != 0
    assert iptables_tags(sb) == set()
    assert sb.exec(sb.host, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert json.loads(fireroute(sb, "ls", "--json").stdout) == []


# --- the demo ------------------------------------------------------------------------------------


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def processes_with_token(token: str) -> list[str]:
    """Processes (QEMU, HTTP server, ...) that inherited the demo run's marker variable."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"FR_DEMO_TEST={token}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def root_view() -> tuple[str, ...]:
    """What the demo must not change in the namespace the test runs in."""
    cmds = (["ip", "-o", "link"], ["ip", "-o", "addr"], ["ip", "route"], ["nft", "list", "ruleset"])
    outs = [subprocess.run(c, capture_output=True, text=True).stdout for c in cmds]
    outs.append(Path("/proc/sys/net/ipv4/ip_forward").read_text())
    return tuple(outs)


def demo_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "fireroute", "demo", *args]


def demo_env(token: str) -> dict[str, str]:
    return {**os.environ, "FR_DEMO_TEST": token}


def wait_for_qemu(token: str, timeout: float = 30) -> None:
    """Until a QEMU carrying the demo's token in its environment runs."""
    deadline = time.monotonic() + timeout
    needle = f"FR_DEMO_TEST={token}".encode()
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"qemu-system" not in f.read():
                        continue
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        return
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError("no QEMU of the demo started")


def demo_namespaces(stderr: str) -> list[str]:
    """The namespaces the demo says it created."""
    match = re.search(r"host netns (\S+) .*internet netns (\S+) ", stderr)
    assert match, f"the demo did not name its namespaces:\n{stderr}"
    return list(match.groups())


def assert_nothing_left(stderr: str, token: str, before: tuple[str, ...]) -> None:
    made = demo_namespaces(stderr)
    assert not set(made) & netns_names(), f"the demo left namespace(s) behind: {made}"
    assert processes_with_token(token) == [], "the demo left processes behind"
    assert root_view() == before, "the demo changed the test's own network namespace"


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The demo's per-VM table rows by VM name (header line starts with ``VM``)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["VM", "TAP"])
    header = lines[start].split()
    rows = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) != len(header):
            break
        rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("boot", [True, False], ids=["boot", "no-boot"])
def test_demo(request: pytest.FixtureRequest, image: GuestImage, boot: bool) -> None:
    """``fireroute demo --vms 2`` proves every check, and leaves nothing behind. The no-boot run
    goes through the launcher install.sh installs (scripts/fireroute, python3 -S)."""
    token, before = secrets.token_hex(8), root_view()
    started = time.monotonic()
    launcher = [str(REPO / "scripts" / "fireroute"), "demo"]
    result = subprocess.run(
        demo_argv("--vms", "2") if boot else [*launcher, "--vms", "2", "--no-boot"],
        capture_output=True,
        text=True,
        timeout=240,
        env=demo_env(token),
    )
    report(request, f"[demo {'boot' if boot else 'no-boot'}] {time.monotonic() - started:.2f}s")
    output = f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0, output
    rows = table_rows(result.stdout)
    assert sorted(rows) == ["vm1", "vm2"], output
    for cells in rows.values():
        tap, guest_ip, mac, boot_arg = cells[1:5]
        assert tap.startswith("fr-") and boot_arg.startswith(f"ip={guest_ip}::"), output
        assert mac.startswith("06:00:"), output
        assert cells[5:] == (["ok"] * 3 if boot else ["skipped"] * 3), output
    assert_nothing_left(result.stderr, token, before)


def test_demo_ctrl_c_mid_boot_cleans_up(image: GuestImage) -> None:
    """Ctrl-C while guests boot: exit 130, no namespace, QEMU or HTTP server left."""
    token, before = secrets.token_hex(8), root_view()
    demo = subprocess.Popen(
        demo_argv("--vms", "3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_env(token),
        start_new_session=True,  # the terminal's Ctrl-C reaches the whole process group
    )
    try:
        assert demo.stderr is not None
        seen = []
        while not seen or "booting" not in seen[-1]:
            line = demo.stderr.readline()
            assert line, "demo ended before booting:\n" + "".join(seen)
            seen.append(line)
        wait_for_qemu(token)  # QEMUs started, none ready yet
        os.killpg(demo.pid, signal.SIGINT)
        stdout, stderr = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    stderr = "".join(seen) + stderr
    assert demo.returncode == 130, f"{stdout}\n{stderr}"
    assert_nothing_left(stderr, token, before)


def test_demo_refuses_without_root() -> None:
    """One clear line and a non-zero exit, nothing created."""
    namespaces = netns_names()
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        + [sys.executable, "-m", "fireroute", "demo", "--vms", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "root" in result.stderr, result
    assert not {ns for ns in netns_names() - namespaces if ns.startswith("frdemo-")}
