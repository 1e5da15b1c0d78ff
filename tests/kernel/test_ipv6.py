"""The IPv4 isolation cannot be side-stepped over IPv6: with IPv6 off on a NAT tap (as up and
restore leave it), a guest reaches nothing of the host over the tap's link; switched back on,
the same probe connects (the positive control)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from tests.conftest import Host, sh

pytestmark = pytest.mark.privileged

SERVER = """
import socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8086)); s.listen(4); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hello\\n"); c.close()
"""
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.settimeout(2)
try:
    s.connect((sys.argv[1], 8086, 0, socket.if_nametoindex("eth0")))
    s.settimeout(15); print(s.makefile().readline().strip())  # (connected: the server's line)
except OSError as e:
    print("FAIL", e); sys.exit(1)
"""


def link_local(mac: str) -> str:
    """The EUI-64 link-local address the kernel gives a link with this MAC."""
    b = [int(x, 16) for x in mac.split(":")]
    b[0] ^= 2
    eui = b[:3] + [0xFF, 0xFE] + b[3:]
    return "fe80::" + ":".join(f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2))


def test_no_ipv6_path_from_a_nat_guest_to_the_host(host: Host):
    rec = json.loads(host.fireroute("up", "a", "--json").stdout)[0]
    tap = rec["host_dev"]
    guest = f"frg6-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", guest)
    server = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        sh("ip", "netns", "exec", guest, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        host.sh(
            "sysctl -qw net.ipv6.conf.default.accept_dad=0 && "
            f"ip link del {tap} && ip link add {tap} type veth peer name eth0 netns {guest} && "
            f"ip addr add {rec['tap_ip']}/{rec['prefix']} dev {tap} && ip link set {tap} up"
        )
        sh("ip", "-n", guest, "link", "set", "eth0", "up")
        host.fireroute("restore")  # the stand-in gets what up gives a tap: IPv6 off
        assert host.run("cat", f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6").stdout.strip() == "1"
        mac = json.loads(host.run("ip", "-j", "link", "show", "dev", tap).stdout)[0]["address"]
        target = link_local(mac)

        def probe() -> str:
            return subprocess.run(
                ["ip", "netns", "exec", guest, sys.executable, "-c", CLIENT, target],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()

        assert probe().startswith("FAIL")
        host.run("sysctl", "-qw", f"net/ipv6/conf/{tap}/disable_ipv6=0")
        assert probe() == "hello"  # the control: with IPv6 on, the host answers over it
    finally:
        server.kill()
        server.wait()
        sh("ip", "netns", "del", guest, check=False)
