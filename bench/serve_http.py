"""The daemon's own cost per request, without the kernel: ``GET /healthz`` (no worker) and a
``PUT`` with a JSON body that the operator's policy refuses (403 before the worker), on one
kept-alive connection, inside a sandbox of namespaces (fireroute.lab.sandbox).

    sudo .venv/bin/python bench/serve_http.py [N] [--src DIR]   (default N=3000; --src: the
                                                          src/ of another checkout to time)

Printed: median and mean microseconds per request. What framing (RFC 9112 checks) and the
strict JSON reader add shows as the difference against an older checkout's ``--src``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALLS = (
    ("GET /healthz", "GET", "/healthz", None),
    ("PUT, refused (403)", "PUT", "/vms/a", '{"dns": ["192.0.2.53"], "uplink": "x"}'),
)


def main() -> int:
    args = sys.argv[1:]
    src = str(ROOT / "src")
    if "--src" in args:
        i = args.index("--src")
        src = str(Path(args[i + 1]).resolve())
        del args[i : i + 2]
    n = int(args[0]) if args else 3000
    sys.path.insert(0, str(ROOT / "src"))
    from serve import Unix  # bench/serve.py's client (this folder is on the path)

    from fireroute.lab.sandbox import Sandbox

    tmp = Path(tempfile.mkdtemp(prefix="frbench-http-"))
    with Sandbox(prefix="frbh") as sb:
        sock = str(tmp / "fr.sock")
        argv = ["nsenter", f"--net=/var/run/netns/{sb.host}", sys.executable, "-m", "fireroute"]
        daemon = subprocess.Popen(
            [*argv, "serve", "--socket", sock, "--state", str(tmp / "serve.db")],
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": src},
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.05)
            c = Unix(sock)
            print(f"# fireroute serve, {n} requests each on one connection ({src})")
            for what, method, url, body in CALLS:
                times = []
                for _ in range(n):
                    t = time.perf_counter()
                    c.request(method, url, body=body)
                    r = c.getresponse()
                    r.read()
                    times.append((time.perf_counter() - t) * 1e6)
                med, mean = statistics.median(times), statistics.mean(times)
                print(f"{what}: median {med:.0f} us, mean {mean:.0f} us (status {r.status})")
        finally:
            daemon.terminate()
            daemon.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
