"""Who may attach to a tap (TUNSETIFF on /dev/net/tun, as a jailed Firecracker does): the
``--owner`` uid, holding no capabilities at all, can; another uid cannot; and a tap made
without ``--owner`` belongs to root, so no unprivileged user can attach to it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged

ATTACH = """
import fcntl, os, struct, sys
TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
fd = os.open(sys.argv[2], os.O_RDWR)
try:
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", sys.argv[1].encode(), IFF_TAP | IFF_NO_PI))
except OSError as e:
    print("refused", e.errno)
    sys.exit(1)
print("attached")
"""


@pytest.fixture
def tun() -> Iterator[str]:
    """A /dev/net/tun node anyone may open (0666, as most distributions ship it; this
    machine's own may be 0600 and stays untouched): the tap's owner is then the only gate."""
    where = tempfile.mkdtemp(prefix="frtun-")
    os.chmod(where, 0o755)
    node = os.path.join(where, "tun")
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(10, 200))
    os.chmod(node, 0o666)
    try:
        yield node
    finally:
        shutil.rmtree(where)


def attach(host: Host, tap: str, uid: int, gid: int, tun: str) -> str:
    """Open the tap as ``uid:gid`` with every capability dropped, in the host namespace."""
    argv = ["nsenter", f"--net=/var/run/netns/{host.ns}"]
    if uid != 0:
        argv += [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]
    p = subprocess.run(
        [*argv, sys.executable, "-S", "-c", ATTACH, tap, tun],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return (p.stdout or p.stderr).strip()


def test_owner_attaches_without_capabilities_and_others_are_refused(host: Host, tun: str):
    host.fireroute("up", "jailed", "--owner", "1234:1234")
    assert attach(host, "fr-jailed", 1234, 1234, tun) == "attached"
    assert attach(host, "fr-jailed", 4321, 4321, tun).startswith("refused")


def test_a_tap_without_owner_is_roots(host: Host, tun: str):
    host.fireroute("up", "plain")
    assert attach(host, "fr-plain", 1234, 1234, tun).startswith("refused")
    assert attach(host, "fr-plain", 0, 0, tun) == "attached"  # root (CAP_NET_ADMIN) still can
    notes = host.fireroute("show", "plain", "--format", "jailer").stderr
    assert "owned by root" in notes, notes  # the jailer note says what the kernel enforces
