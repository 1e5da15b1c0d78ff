"""A claim of a ready VM (fireroute/ready.py, ``"ready"`` in the server config) against a cold
up, through one ``fireroute serve`` in one run, inside a sandbox of namespaces
(fireroute.lab.sandbox) that goes away afterwards.

    sudo .venv/bin/python bench/ready.py [N]      (default N=100 claims and 100 cold ups)

The daemon keeps N ready VMs; once they are all made, one client on a kept-alive connection
sends N ``PUT /vms/cI {}`` (the server's fixed options: each claims one), then N
``PUT /vms/dI {"dns": [...]}`` (other options: each made cold, as without ready VMs). Printed,
medians in ms: inside the daemon (its log's ``ms``: from the request read to the answer
written) and at the client (the round trip), for both, and the ratio cold / claim.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from serve import Unix  # noqa: E402

from fireroute.lab.sandbox import Sandbox  # noqa: E402


def ready_count(c: Unix) -> int:
    c.request("GET", "/vms")
    r = c.getresponse()
    vms = json.loads(r.read())
    return sum(1 for v in vms if v["name"].startswith("_ready-") and v["state"] == "active")


def series(c: Unix, prefix: str, n: int, body: str) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        assert c.call("PUT", f"/vms/{prefix}{i}", body) == 200
        out.append((time.perf_counter() - t) * 1000)
    return out


def logged(log: Path, prefix: str) -> list[float]:
    """The daemon's own ``ms`` of its answers to ``up`` of the VMs named ``prefix<i>``."""
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("verb") == "up" and str(rec.get("vm", "")).startswith(prefix):
                out.append(float(rec["ms"]))
    return out


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    tmp = Path(tempfile.mkdtemp(prefix="frbench-ready-"))
    config = tmp / "serve.json"
    config.write_text(json.dumps({"fixed": {"pool": "172.16.0.0/16"}, "ready": n}))
    sock, log = str(tmp / "fr.sock"), tmp / "serve.log"
    with Sandbox(prefix="frbr") as sb:
        argv = ["nsenter", f"--net=/var/run/netns/{sb.host}", sys.executable, "-m", "fireroute"]
        argv += ["serve", "--socket", sock, "--state", str(tmp / "state.db")]
        with open(log, "w") as err:
            env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
            daemon = subprocess.Popen([*argv, "--config", str(config)], stderr=err, env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    c = Unix(sock)
                    if ready_count(c) == n:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            else:
                raise SystemExit(f"the daemon did not make {n} ready VMs in time")
            claim = series(c, "c", n, "{}")
            cold = series(c, "d", n, '{"dns": ["192.0.2.53"]}')
        finally:
            daemon.terminate()
            daemon.wait(60)
    med = statistics.median
    inside_claim, inside_cold = med(logged(log, "c")), med(logged(log, "d"))
    print(f"# fireroute serve: claim of a ready VM vs cold up, {n} each (medians, ms)")
    print("| what | inside the daemon | at the client |")
    print("|---|---|---|")
    print(f"| claim (`PUT /vms/NAME {{}}`, a ready VM renamed) | {inside_claim:.3f} | "
          f"{med(claim):.3f} |")  # fmt: skip
    print(f"| cold up (other options: a VM made) | {inside_cold:.3f} | {med(cold):.3f} |")
    print(f"| cold / claim | {inside_cold / inside_claim:.2f}x | {med(cold) / med(claim):.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
