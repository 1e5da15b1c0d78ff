"""The kernel's cost of one change to a concatenated interval set (``ifname . ipv4_addr``,
flags interval: what the egress policy's sets are), alone in a table, by its size.

    sudo .venv/bin/python bench/interval_set.py          # 30, 750, 3000 and 12000 ranges

Each size in a throwaway namespace: the set is filled with ``nft -f`` (three ranges for each
of N/3 taps, as bench/ports.py's VMs have), then 20 transactions each adding one range and
20 each deleting it again are sent in-process (fireroute.kernel.nftnl) and timed; the medians
are printed. An add costs little whatever the size; a delete costs the kernel a walk over the
set (nft_pipapo_remove), so a policy change writes only the ranges that change and the
policy sets are sharded (want/nft.py). Compare with bench/ports.py (RESULTS.md section 8).
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
ranges = [f'"t{i // 3}" . 10.{i // 256 % 256}.{i % 256}.0/24' for i in range(n)]
for k in range(0, n, 1000):
    body = "add element ip t s { " + ", ".join(ranges[k:k + 1000]) + " }\\n"
    subprocess.run(["nft", "-f", "-"], input=body, text=True, check=True)
channel, adds, deletes = Nftnl(), [], []
for r in range(20):
    element = f'{{ "probe" . 198.51.{r}.0/24 }}'
    for verb, times in (("add", adds), ("delete", deletes)):
        t = time.perf_counter()
        channel.run(decl + f"{verb} element ip t s {element}\\n")
        times.append(time.perf_counter() - t)
add, delete = (statistics.median(x) * 1e3 for x in (adds, deletes))
print(f"{n} ranges: add {add:.2f} ms, delete {delete:.2f} ms (medians of 20)")
"""


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("bench/interval_set.py: run as root (it creates network namespaces)")
    src = str(Path(__file__).resolve().parent.parent / "src")
    for n in (30, 750, 3000, 12000):
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
