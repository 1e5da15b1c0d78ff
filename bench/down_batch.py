"""A batch ``up --count N`` and ``down --all`` of N VMs, several revisions side by side: each
run brings N VMs up and takes them all down (each timed: wall time, and the CPU time of
fireroute and the ip/nft processes it waits for), revision after revision in a rotating
order, each in its own throwaway sandbox (fireroute.lab.sandbox; the machine's namespace is never
touched). Medians per VM and the ratios to the first revision: what bench/suite.py's "up
per VM" and "down per VM" measure once per run, repeated so that a shared machine's noise
averages out.

    sudo .venv/bin/python bench/down_batch.py --revs 76cd6f0,HEAD --n 1000 --runs 9

Every revision is a ``git archive`` snapshot (``HEAD`` for what is committed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from bench_nat import Bench  # noqa: E402
from suite import MADE, TABLE, prepare_code, sweep  # noqa: E402

from fireroute.lab.sandbox import Sandbox  # noqa: E402

PREFIX = "frdownb"
"""its own sandboxes' prefix: a run of bench/suite.py beside it sweeps every ``frsuite-*``"""


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(b: Bench, argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one command."""
    c = children_cpu()
    wall = b.timed(argv)
    return wall, children_cpu() - c


def report(verb: str, n: int, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    """Medians and best per VM, and the ratios of the medians to the first revision's."""
    revs = list(wall)
    print(f"{verb} ({n} VMs), {len(wall[revs[0]])} runs per revision (per VM, ms):")
    print(f"{'revision':12} {'wall median':>12} {'wall best':>10} {'CPU median':>11} "
          f"{'ratio wall':>10} {'ratio CPU':>10}")  # fmt: skip
    base = revs[0]
    for rev in revs:
        wm, cm = statistics.median(wall[rev]), statistics.median(cpu[rev])
        print(
            f"{rev:12} {wm / n * 1e3:12.3f} {min(wall[rev]) / n * 1e3:10.3f} "
            f"{cm / n * 1e3:11.3f} {wm / statistics.median(wall[base]):10.2f} "
            f"{cm / statistics.median(cpu[base]):10.2f}"
        )


def prepare(revs: list[str], tmp: Path) -> dict[str, str]:
    """rev -> its snapshot's launcher, every snapshot compiled under one bytecode prefix."""
    launchers = {}
    for i, rev in enumerate(revs):
        info = prepare_code(rev, tmp / f"rev{i}")
        launchers[rev] = info["launcher"]
        print(f"{rev}: {info['commit']}", flush=True)
    os.environ["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    for launcher in launchers.values():
        src = Path(launcher).parent.parent / "src" / "fireroute"
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)
    return launchers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revs", default="76cd6f0,HEAD", help="comma list; ratios to the first")
    ap.add_argument("--n", type=int, default=1000, help="VMs brought up and taken down")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument(
        "--churn", type=int, default=0, help="one more VM up and down this many times first"
    )
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates network namespaces")
    revs = a.revs.split(",")
    wall: dict[str, dict[str, list[float]]] = {v: {r: [] for r in revs} for v in ("up", "down")}
    cpu: dict[str, dict[str, list[float]]] = {v: {r: [] for r in revs} for v in ("up", "down")}
    try:
        with tempfile.TemporaryDirectory() as tmpd, contextlib.ExitStack() as stack:
            tmp = Path(tmpd)
            for i in range(len(revs)):
                (tmp / f"rev{i}").mkdir()
            launchers = prepare(revs, tmp)
            boxes = {r: stack.enter_context(Sandbox(prefix=PREFIX)) for r in revs}
            MADE.extend(sb.host for sb in boxes.values())
            for run in range(a.runs):
                k = run % len(revs)
                for rev in revs[k:] + revs[:k]:  # rotated: drift hits every revision alike
                    b = Bench(boxes[rev], tmp / f"state-{revs.index(rev)}-{run}.db")
                    w, c = timed(b, [launchers[rev], "up", "--count", str(a.n), "--prefix", "v",
                                     "--table", TABLE])  # fmt: skip
                    wall["up"][rev].append(w)
                    cpu["up"][rev].append(c)
                    for _ in range(a.churn):  # (as bench/suite.py does before its down)
                        b.timed([launchers[rev], "up", "churn", "--table", TABLE])
                        b.timed([launchers[rev], "down", "churn"])
                    w, c = timed(b, [launchers[rev], "down", "--all"])
                    wall["down"][rev].append(w)
                    cpu["down"][rev].append(c)
                print(f"[{time.strftime('%H:%M:%S')}] run {run + 1}/{a.runs}", flush=True)
    finally:
        sweep()  # (each sandbox removes its own on exit: this is belt and braces)
    report("up --count", a.n, wall["up"], cpu["up"])
    report("down --all", a.n, wall["down"], cpu["down"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
