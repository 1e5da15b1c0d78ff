"""A VM's network through ``fireroute serve`` against a cold ``fireroute up``, in one run,
inside a sandbox of namespaces (fireroute.lab.sandbox) that goes away afterwards.

    sudo .venv/bin/python bench/serve.py [N]     (default N=200 VMs per single-client series)

Printed, medians in ms:
- cold CLI: ``scripts/fireroute up NAME`` (the lean launcher) started once per VM from inside
  the namespace, as an orchestrator would, then ``down``;
- daemon, one client on one kept-alive connection: PUT then DELETE /vms/NAME;
- 8 concurrent clients bringing 1000 VMs up, then down: the wall time of each burst.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fireroute.lab.sandbox import Sandbox  # noqa: E402

CLI_LOOP = """
import subprocess, sys, time, json
fr, n = sys.argv[1], int(sys.argv[2])
up, down = [], []
for i in range(n):
    t = time.perf_counter(); subprocess.run([fr, "up", f"c{i}"], check=True, capture_output=True)
    up.append((time.perf_counter() - t) * 1000)
for i in range(n):
    t = time.perf_counter(); subprocess.run([fr, "down", f"c{i}"], check=True, capture_output=True)
    down.append((time.perf_counter() - t) * 1000)
print(json.dumps({"up": up, "down": down}))
"""


class Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self.unix = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.unix)

    def call(self, method: str, url: str, body: str | None = None) -> int:
        self.request(method, url, body=body)
        r = self.getresponse()
        r.read()
        return r.status


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    tmp = Path(tempfile.mkdtemp(prefix="frbench-serve-"))
    with Sandbox(prefix="frbs") as sb:
        env = {**os.environ, "FIREROUTE_STATE": str(tmp / "cli.db")}
        nsenter = ["nsenter", f"--net=/var/run/netns/{sb.host}"]
        out = subprocess.run(
            [*nsenter, sys.executable, "-c", CLI_LOOP, str(ROOT / "scripts" / "fireroute"), str(n)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        cli = json.loads(out)
        sock = str(tmp / "fr.sock")
        argv = [*nsenter, sys.executable, "-m", "fireroute", "serve", "--socket", sock]
        daemon = subprocess.Popen(
            [*argv, "--state", str(tmp / "serve.db")],
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.05)
            c = Unix(sock)
            assert c.call("GET", "/healthz") == 200
            up, down = [], []
            for i in range(n):
                t = time.perf_counter()
                assert c.call("PUT", f"/vms/s{i}", "{}") == 200
                up.append((time.perf_counter() - t) * 1000)
            for i in range(n):
                t = time.perf_counter()
                assert c.call("DELETE", f"/vms/s{i}") == 200
                down.append((time.perf_counter() - t) * 1000)
            bursts = {}
            for method in ("PUT", "DELETE"):
                errors: list[int] = []

                def client(k: int, method: str = method, errors: list[int] = errors) -> None:
                    conn = Unix(sock)
                    for i in range(k, 1000, 8):
                        status = conn.call(method, f"/vms/p{i}", "{}" if method == "PUT" else None)
                        if status != 200:
                            errors.append(status)

                threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
                t = time.perf_counter()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                bursts[method] = time.perf_counter() - t
                assert not errors, errors[:5]
        finally:
            daemon.terminate()
            daemon.wait(30)
    med = statistics.median
    cu, cd, su, sd = med(cli["up"]), med(cli["down"]), med(up), med(down)
    print(f"# fireroute serve vs cold CLI, {n} VMs per single-client series (medians, ms)")
    print("| what | up | down | up vs cold CLI |")
    print("|---|---|---|---|")
    print(f"| cold `fireroute up`/`down` (one process per VM) | {cu:.2f} | {cd:.2f} | 1.00x |")
    print(f"| serve, one client, kept-alive connection | {su:.2f} | {sd:.2f} | {su / cu:.3f}x |")
    print(
        f"| serve, 8 clients, 1000 VMs (wall time) | {bursts['PUT']:.2f} s | "
        f"{bursts['DELETE']:.2f} s | |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
