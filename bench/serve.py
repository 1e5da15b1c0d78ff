"""A VM's network through ``fireroute serve`` against a cold ``fireroute up``, in one run,
inside a sandbox of namespaces (fireroute.lab.sandbox) that goes away afterwards.

    sudo .venv/bin/python bench/serve.py [N]     (default N=200 VMs per single-client series)
    sudo .venv/bin/python bench/serve.py --bursts [--rounds R] [--src DIR ...]

Printed, medians in ms:
- cold CLI: ``scripts/fireroute up NAME`` (the lean launcher) started once per VM from inside
  the namespace, as an orchestrator would, then ``down``;
- daemon, one client on one kept-alive connection: PUT then DELETE /vms/NAME;
- 8 concurrent clients bringing 1000 VMs up, then down: the wall time of each burst.

``--bursts``: only the 8-client bursts, R rounds (default 3) against one daemon per source
tree (``--src``, default this checkout's src/; give two to compare code, e.g. another
worktree's), the trees taking turns round by round; printed per tree: the median wall times
and how many calls the worker ran together on average (the daemon's log, ``batch``).
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


def start_daemon(nsenter: list[str], tmp: Path, src: Path) -> tuple[subprocess.Popen, str, Path]:
    """``fireroute serve`` from the source tree ``src`` in the sandbox; (process, socket, log)."""
    sock = str(tmp / "fr.sock")
    log = tmp / "serve.log"
    argv = [*nsenter, sys.executable, "-m", "fireroute", "serve", "--socket", sock]
    with open(log, "w") as err:
        daemon = subprocess.Popen(
            [*argv, "--state", str(tmp / "serve.db")],
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(src)},
        )
    deadline = time.monotonic() + 30
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    return daemon, sock, log


def burst(sock: str, method: str, prefix: str = "p") -> float:
    """8 clients, 1000 VMs: each client its share one after the other; the wall time."""
    errors: list[int] = []

    def client(k: int) -> None:
        conn = Unix(sock)
        for i in range(k, 1000, 8):
            status = conn.call(method, f"/vms/{prefix}{i}", "{}" if method == "PUT" else None)
            if status != 200:
                errors.append(status)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    assert not errors, errors[:5]
    return wall


def batches(log: Path, verb: str) -> float:
    """The mean ``batch`` of the daemon's answers to ``verb`` calls (its JSON log lines)."""
    sizes = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("verb") == verb and "batch" in record:
                sizes.append(record["batch"])
    return statistics.mean(sizes) if sizes else 0.0


def bursts(args: list[str]) -> int:
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 3
    srcs = [Path(args[i + 1]).resolve() for i, a in enumerate(args) if a == "--src"]
    srcs = srcs or [ROOT / "src"]
    walls: dict[Path, dict[str, list[float]]] = {s: {"PUT": [], "DELETE": []} for s in srcs}
    sizes: dict[Path, list[float]] = {s: [] for s in srcs}
    with Sandbox(prefix="frbs") as sb:
        nsenter = ["nsenter", f"--net=/var/run/netns/{sb.host}"]
        for r in range(rounds):
            for src in srcs:
                tmp = Path(tempfile.mkdtemp(prefix="frbench-serve-"))
                daemon, sock, log = start_daemon(nsenter, tmp, src)
                try:
                    assert Unix(sock).call("GET", "/healthz") == 200
                    for method in ("PUT", "DELETE"):
                        walls[src][method].append(burst(sock, method, f"r{r}-"))
                finally:
                    daemon.terminate()
                    daemon.wait(30)
                sizes[src].append(batches(log, "down"))
    med = statistics.median
    print(f"# fireroute serve, 8 clients, 1000 VMs, {rounds} rounds (medians of wall times)")
    print("| source tree | up | down | down calls run together (mean) |")
    print("|---|---|---|---|")
    for src in srcs:
        w = walls[src]
        runs = ", ".join(f"{d:.2f}" for d in w["DELETE"])
        print(
            f"| `{src}` | {med(w['PUT']):.2f} s | {med(w['DELETE']):.2f} s ({runs}) | "
            f"{statistics.mean(sizes[src]):.1f} |"
        )
    return 0


def main() -> int:
    if "--bursts" in sys.argv:
        return bursts(sys.argv[1:])
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
        daemon, sock, _ = start_daemon(nsenter, tmp, ROOT / "src")
        try:
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
            walls = {method: burst(sock, method) for method in ("PUT", "DELETE")}
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
        f"| serve, 8 clients, 1000 VMs (wall time) | {walls['PUT']:.2f} s | "
        f"{walls['DELETE']:.2f} s | |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
