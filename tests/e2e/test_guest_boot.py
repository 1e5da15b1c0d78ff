"""Boot real guests (QEMU microvm, TCG) on a hand-made tap inside a throwaway netns.

Proves the lab layer works before anything else relies on it: the guest applies ``ip=`` with
klibc's ipconfig, packets flow both ways through the tap, and a wrong ``ip=`` is caught.
Everything happens in ``frtest-boot-*`` namespaces; the root namespace is never touched.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fireroute.lab.guest import GuestImage
from fireroute.lab.vmm import Guest, start_guest
from tests.e2e.common import E2E_MARKS, report

pytestmark = E2E_MARKS

GATEWAY = "172.16.0.1"
GUEST_IP = "172.16.0.2"
GUEST_MAC = "06:00:AC:10:00:02"
DNS = "10.0.0.53"
GOOD_IP_ARG = f"ip={GUEST_IP}::{GATEWAY}:255.255.255.252::eth0:off:{DNS}"
#: An address of the netns that is not on the guest's /30: reachable only via the default route.
BEYOND_GATEWAY = "192.0.2.1"

# Second tap for the negative controls, which boot while the good guest still runs.
BAD_GATEWAY = "172.16.0.5"
BAD_GUEST_IP = "172.16.0.6"
WRONG_IP_ARGS = {
    "gateway-in-other-subnet": f"ip={BAD_GUEST_IP}::172.16.0.9:255.255.255.252::eth0:off",
    "missing-field": f"ip={BAD_GUEST_IP}:{BAD_GATEWAY}:255.255.255.252::eth0:off",
}


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def in_ns(netns: str, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", netns, *argv, **kwargs)  # type: ignore[arg-type]


def ping_argv() -> list[str]:
    if shutil.which("ping"):
        return ["ping"]
    if shutil.which("busybox"):
        return ["busybox", "ping"]
    pytest.skip("no ping on the host (install iputils-ping or busybox-static)")


def add_tap(netns: str, tap: str, cidr: str) -> None:
    sh("ip", "-n", netns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
    sh("ip", "-n", netns, "addr", "add", cidr, "dev", tap)
    sh("ip", "-n", netns, "link", "set", tap, "up")


def reaches_gateway(guest: Guest, gateway: str) -> tuple[bool, str]:
    """The guest's default route goes via ``gateway`` and carries packets beyond it.

    Pinging the gateway alone is not enough: a /30 gateway is on-link even when ``ip=``
    named a wrong one, so the check also pings an address only the default route reaches.
    """
    checks = [
        f"ip route | grep -q '^default via {gateway} '",
        f"ping -c1 -W3 {gateway}",
        f"ping -c1 -W3 {BEYOND_GATEWAY}",
    ]
    transcript = []
    for check in checks:
        status, output = guest.run(check)
        transcript.append(f"$ {check}\n{output}[exit {status}]")
        if status != 0:
            return False, "\n".join(transcript)
    return True, "\n".join(transcript)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"frtest-boot-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", f"{BEYOND_GATEWAY}/32", "dev", "lo")
        add_tap(name, "tap0", f"{GATEWAY}/30")
        add_tap(name, "tap1", f"{BAD_GATEWAY}/30")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="module")
def guest(
    request: pytest.FixtureRequest,
    image: GuestImage,
    netns: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guest]:
    log = tmp_path_factory.mktemp("console") / "good.log"
    with start_guest(
        image,
        netns=netns,
        tap="tap0",
        mac=GUEST_MAC,
        boot_args=GOOD_IP_ARG,
        name="good",
        log_path=log,
    ) as booted:
        report(request, f"[guest] booted in {booted.boot_seconds:.2f}s (console log: {log})")
        yield booted


def test_guest_applied_ip_arg(guest: Guest) -> None:
    assert guest.net_status == "ok", guest.console_text


def test_guest_pings_gateway(guest: Guest) -> None:
    status, output = guest.run(f"ping -c1 -W3 {GATEWAY}")
    assert status == 0, output


def test_guest_interface_mac_and_address(guest: Guest) -> None:
    status, output = guest.run("ip addr show dev eth0")
    assert status == 0, output
    assert f"link/ether {GUEST_MAC.lower()} " in output
    assert f"inet {GUEST_IP}/30 " in output


def test_guest_default_route(guest: Guest) -> None:
    status, output = guest.run("ip route show default")
    assert status == 0, output
    assert output.split()[:3] == ["default", "via", GATEWAY], output
    ok, transcript = reaches_gateway(guest, GATEWAY)
    assert ok, transcript


def test_guest_resolv_conf(guest: Guest) -> None:
    status, output = guest.run("cat /etc/resolv.conf")
    assert status == 0, output
    assert f"nameserver {DNS}" in output.splitlines()


def test_netns_pings_guest(guest: Guest, netns: str) -> None:
    result = in_ns(netns, *ping_argv(), "-c1", "-W3", GUEST_IP, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_guest_listener_reached_from_netns(guest: Guest, netns: str) -> None:
    status, output = guest.run(
        "(echo fireroute-hello | nc -l -p 8080) >/dev/null 2>&1 & "
        "for i in 1 2 3 4 5 6 7 8 9 10; do netstat -ltn | grep -q ':8080 ' && exit 0; "
        "sleep 0.2; done; exit 1"
    )
    assert status == 0, output
    client = (
        "import socket, sys\n"
        f"s = socket.create_connection(({GUEST_IP!r}, 8080), timeout=5)\n"
        "sys.stdout.write(s.makefile().readline())\n"
    )
    result = in_ns(netns, sys.executable, "-c", client, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fireroute-hello"


def test_guest_http_request_to_netns(guest: Guest, netns: str, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("served-from-netns\n")
    server = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "http.server", "8000"]
        + ["--bind", GATEWAY, "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        request = r"printf 'GET /hello.txt HTTP/1.0\r\n\r\n' | nc -w 5 " + f"{GATEWAY} 8000"
        for _ in range(50):  # until the server listens
            status, output = guest.run(request)
            if "served-from-netns" in output:
                break
            time.sleep(0.2)
        assert "HTTP/1.0 200" in output and "served-from-netns" in output, output
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("case", sorted(WRONG_IP_ARGS))
def test_wrong_ip_arg_fails_gateway_check(
    case: str,
    request: pytest.FixtureRequest,
    image: GuestImage,
    netns: str,
    guest: Guest,
    tmp_path: Path,
) -> None:
    """Negative control, booted while the good guest runs (two guests at once)."""
    with start_guest(
        image,
        netns=netns,
        tap="tap1",
        mac="06:00:AC:10:00:06",
        boot_args=WRONG_IP_ARGS[case],
        name=f"bad-{case}",
        log_path=tmp_path / "console.log",
    ) as bad:
        report(request, f"[guest bad-{case}] booted in {bad.boot_seconds:.2f}s")
        ok, transcript = reaches_gateway(bad, BAD_GATEWAY)
        assert not ok, f"wrong {WRONG_IP_ARGS[case]!r} passed the gateway check:\n{transcript}"
        assert bad.net_status == "failed", bad.console_text
        good_ok, good_transcript = reaches_gateway(guest, GATEWAY)  # still up alongside
        assert good_ok, good_transcript
