"""The kernel's cost of one change to a concatenated interval set (``ifname . ipv4_addr``,
flags interval: what the egress policy's sets are), alone in a table, by its size.

    sudo .venv/bin/python bench/interval_set.py          # 10, 2500 and 40000 ranges

Each size in a throwaway namespace: the set is filled with ``nft -f``, then 20 transactions
each adding one range are sent in-process (fireroute.kernel.nftnl) and timed; the median is
printed. Compare with bench/ports.py's ``policy`` figures (RESULTS.md section 8).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

DECLARE = "table ip t {\n  set s { type ifname . ipv4_addr; flags interval; }\n}\n"
CHILD = """
import statistics, subprocess, sys, time
sys.path.insert(0, sys.argv[2])
from fireroute.kernel.nftnl import Nftnl
n = int(sys.argv[1])
decl = sys.argv[3]
subprocess.run(["nft", "-f", "-"], input=decl, text=True, check=True)
ranges = [f'"t{i}" . 10.{i // 256 % 256}.{i % 256}.0/24' for i in range(n)]
for k in range(0, n, 1000):
    body = "add element ip t s { " + ", ".join(ranges[k:k + 1000]) + " }\\n"
    subprocess.run(["nft", "-f", "-"], input=body, text=True, check=True)
channel, times = Nftnl(), []
for r in range(20):
    script = decl + f'add element ip t s {{ "probe" . 198.51.{r}.0/24 }}\\n'
    t = time.perf_counter()
    channel.run(script)
    times.append(time.perf_counter() - t)
print(f"{n} ranges: {statistics.median(times) * 1e3:.2f} ms a change (median of 20)")
"""


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("bench/interval_set.py: run as root (it creates network namespaces)")
    src = str(Path(__file__).resolve().parent.parent / "src")
    for n in (10, 2500, 40000):
        ns = f"frbench-iv-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            argv = [sys.executable, "-c", CHILD, str(n), src, DECLARE]
            subprocess.run(["ip", "netns", "exec", ns, *argv], check=True)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
