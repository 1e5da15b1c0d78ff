"""Published ports with a booted guest: a service in the guest (busybox nc on its port 8080)
reached through ``--publish`` from the internet namespace, from the host at its uplink
address and, for a 127.0.0.1 port, from the host's loopback; after ``unpublish`` the same
connection fails (the negative control beside each positive one)."""

from __future__ import annotations

import sys
from pathlib import Path

from fireroute.lab.guest import GuestImage
from fireroute.lab.sandbox import HOST_UPLINK_IP, Sandbox
from tests.e2e import test_modes_e2e
from tests.e2e.common import E2E_MARKS
from tests.e2e.test_modes_e2e import LISTEN, boot_all, fetch_ok, up

pytestmark = E2E_MARKS
sandbox = test_modes_e2e.sandbox  # the same throwaway host and internet (a fixture)

CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
    "    sys.stdout.write(s.makefile().readline())\n"
    "except OSError as e:\n"
    "    print('FAIL', e)\n"
)


def connect(sb: Sandbox, ns: str, addr: str, port: int) -> str:
    return sb.exec(ns, sys.executable, "-c", CONNECT, addr, str(port), check=False).stdout.strip()


def test_a_published_guest_service_is_reached_and_unpublished(
    image: GuestImage, sandbox: Sandbox, tmp_path: Path
):
    sb = sandbox
    rec = up(sb, "pub-1", "--publish", "8081:8080", "--publish", "127.0.0.1:8082:8080")
    (guest,) = boot_all(image, [(sb.host, "pub-1", rec)], tmp_path)
    try:
        assert f"client={HOST_UPLINK_IP}" in fetch_ok(guest)
        for ns, addr, port in (
            (sb.internet, HOST_UPLINK_IP, 8081),  # from outside
            (sb.host, HOST_UPLINK_IP, 8081),  # the host, at its own address
            (sb.host, "127.0.0.1", 8082),  # the host's loopback
        ):
            status, out = guest.run(LISTEN.format(name="pub"), timeout=20)
            assert status == 0, out
            assert connect(sb, ns, addr, port) == "hello-from-pub", (ns, addr, port)
        sb.fireroute("unpublish", "pub-1", "8081:8080", "127.0.0.1:8082:8080")
        status, out = guest.run(LISTEN.format(name="pub"), timeout=20)
        assert status == 0, out
        assert connect(sb, sb.internet, HOST_UPLINK_IP, 8081).startswith("FAIL")
        assert connect(sb, sb.host, "127.0.0.1", 8082).startswith("FAIL")
        assert connect(sb, sb.host, rec["guest_ip"], 8080) == "hello-from-pub"  # still there
    finally:
        guest.stop()
