"""Two kernel costs the daemon's and the first VM's figures rest on, inside a throwaway network
namespace (the script re-executes itself under ``unshare --net``):

    sudo .venv/bin/python bench/kernel_costs.py

- deleting 16 taps: one ``ip link del`` after another, 16 at once, and as one group delete
  (why a batch of deletions costs one grace period, and serial ones sixteen);
- one ``nft -t list table`` process (what a table's first VM now reads before any change);
- the table's skeleton as a table's first VM declares it (``nft -f``, a new table each time),
  with its 64 pairs of egress policy sets and with the first 16 only (what the skeleton was
  before the layout went to 64 pairs).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

MARK = "FRBENCH_KERNEL_COSTS"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def taps(first: int, n: int, group: int | None = None) -> list[str]:
    names = [f"t{i}" for i in range(first, first + n)]
    for name in names:
        ip("tuntap", "add", "dev", name, "mode", "tap")
        if group is not None:
            ip("link", "set", "dev", name, "group", str(group))
    return names


def ms(t: float) -> float:
    return (time.perf_counter() - t) * 1000


def main() -> int:
    if os.environ.get(MARK) != "1":
        env = {**os.environ, MARK: "1"}
        return subprocess.run(["unshare", "--net", sys.executable, __file__], env=env).returncode
    names = taps(0, 16)
    t = time.perf_counter()
    for name in names:
        ip("link", "del", "dev", name)
    serial = ms(t)
    names = taps(100, 16)
    t = time.perf_counter()
    procs = [subprocess.Popen(["ip", "link", "del", "dev", n]) for n in names]
    for p in procs:
        p.wait()
    parallel = ms(t)
    taps(200, 16, group=99)
    t = time.perf_counter()
    ip("link", "del", "group", "99")
    grouped = ms(t)
    subprocess.run(["nft", "add", "table", "ip", "firecracker"], check=True)
    reads = []
    for _ in range(30):
        t = time.perf_counter()
        subprocess.run(["nft", "-t", "list", "table", "ip", "firecracker"], capture_output=True)
        reads.append(ms(t))
    from fireroute.want import nft, tables

    full = tables.skeleton("firecracker")
    pair = re.compile(r"\bout_(?:deny_|allow_)?(\d+)\b")
    sixteen = "".join(
        line
        for line in full.splitlines(keepends=True)
        if not any(int(k) >= 16 for k in pair.findall(line))
    )
    skeleton = {}
    for label, text in ((f"{nft.SHARDS} pairs", full), ("16 pairs", sixteen)):
        times = []
        for _ in range(20):
            subprocess.run(["nft", "delete", "table", "ip", "firecracker"], capture_output=True)
            t = time.perf_counter()
            subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True)
            times.append(ms(t))
        skeleton[label] = statistics.median(times)
    print("| what | ms |\n|---|---|")
    print(f"| delete 16 taps, one after another | {serial:.0f} |")
    print(f"| delete 16 taps, all at once | {parallel:.0f} |")
    print(f"| delete 16 taps, one group delete | {grouped:.0f} |")
    print(f"| one `nft -t list table` process (median of 30) | {statistics.median(reads):.2f} |")
    for label, t in skeleton.items():
        print(f"| the first VM's skeleton, {label} (`nft -f`, median of 20) | {t:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
