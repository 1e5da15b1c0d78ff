"""Egress policy and accounting with booted guests. A second server, on a private address
(10.99.99.1, only inside the throwaway internet namespace) behind the uplink, plays "the
operator's private network": a guest under ``--egress public`` reaches a public server
(198.51.100.10, also behind the uplink) but neither it (refused at once, not left hanging) nor
the uplink's own subnet; a guest under ``--egress none --allow-out
10.99.99.1/32`` reaches it and nothing else; and ``fireroute stats`` counts a known transfer
(a fixed-size download) within what the guest's own interface counted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from fireroute.lab.guest import GuestImage
from fireroute.lab.sandbox import INTERNET_IP, Sandbox
from tests.e2e import test_modes_e2e
from tests.e2e.common import E2E_MARKS
from tests.e2e.test_modes_e2e import boot_all, up

pytestmark = E2E_MARKS
sandbox = test_modes_e2e.sandbox  # the same throwaway host and internet (a fixture)

PRIVATE = "10.99.99.1"
PUBLIC = "198.51.100.10"  # a public address (documentation range), beyond the uplink's subnet
SIZE = 200_000
SERVER = (
    "import http.server as h, sys\n"
    f"BODY = b'x' * {SIZE}\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(BODY)))\n"
    "        self.end_headers(); self.wfile.write(BODY)\n"
    "    def log_message(self, *a): pass\n"
    "h.HTTPServer((sys.argv[1], 80), H).serve_forever()\n"
)


def fetch(guest, addr: str) -> tuple[int, str]:  # noqa: ANN001
    cmd = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} 80 | wc -c"
    return guest.run(cmd, timeout=20)


def test_egress_policies_and_a_counted_transfer(
    image: GuestImage, sandbox: Sandbox, tmp_path: Path
):
    sb = sandbox
    for addr in (PRIVATE, PUBLIC):
        sb.exec(sb.internet, "ip", "addr", "add", f"{addr}/32", "dev", "lo")
        sb.exec(sb.host, "ip", "route", "add", f"{addr}/32", "via", INTERNET_IP)
    servers = [
        subprocess.Popen(["ip", "netns", "exec", sb.internet, sys.executable, "-c", SERVER, a])
        for a in (PRIVATE, PUBLIC)
    ]
    try:
        time.sleep(0.5)
        pub = up(sb, "pub", "--egress", "public")
        only = up(sb, "only", "--egress", "none", "--allow-out", f"{PRIVATE}/32")
        guests = boot_all(image, [(sb.host, "pub", pub), (sb.host, "only", only)], tmp_path)
        try:
            g_pub, g_only = guests
            status, out = fetch(g_pub, PUBLIC)
            assert int(out.split()[-1]) > SIZE, out  # the internet: yes
            status, out = fetch(g_pub, INTERNET_IP)
            assert int(out.split()[-1]) == 0, out  # the uplink's own subnet: no
            started = time.monotonic()
            status, out = fetch(g_pub, PRIVATE)
            assert int(out.split()[-1]) == 0, out  # the private network: no
            assert time.monotonic() - started < 2.5  # refused, not a silent drop
            status, out = fetch(g_only, PRIVATE)
            assert int(out.split()[-1]) > SIZE, out  # the allowed address: yes
            for other in (INTERNET_IP, PUBLIC):
                status, out = fetch(g_only, other)
                assert int(out.split()[-1]) == 0, out  # anything else: no

            # a known transfer, counted: the download's bytes, within what eth0 received
            def counts() -> tuple[int, int]:
                stats = json.loads(sb.fireroute("stats", "only", "--json").stdout)[0]
                _, eth = g_only.run("cat /sys/class/net/eth0/statistics/rx_bytes")
                return int(stats["rx_bytes"]), int(eth.split()[-1])

            before, eth_before = counts()
            status, out = fetch(g_only, PRIVATE)
            assert int(out.split()[-1]) > SIZE, out
            after, eth_after = counts()
            counted, seen = after - before, eth_after - eth_before
            assert SIZE < counted <= seen, (counted, seen)  # IP bytes: no link headers
        finally:
            for g in guests:
                g.stop()
    finally:
        for s in servers:
            s.kill()
            s.wait()
