"""Dual stack against IPv4 only, in the same run (issue 24's speed targets): a VM's cold
``up --ipv6`` + ``down`` against the same without ``--ipv6`` (interleaved, a resident VM of
each kind keeping both tables, so that neither run makes or removes one), and a batch
``up --count N --ipv6`` + ``down --all`` against the v4-only batch (interleaved). Each in a
throwaway sandbox (fireroute.lab.sandbox); medians, and the ratios dual/v4.

    sudo .venv/bin/python bench/ipv6.py [--runs 30] [--n 1000] [--batch-runs 3]
    sudo .venv/bin/python bench/ipv6.py --profile --n 1000     # where a batch's time goes

Targets: one ``up --ipv6`` within 1.2x of a v4-only ``up``; a dual-stack batch within 1.3x.
``--profile``: one batch ``up --count N`` and ``down --all`` of each kind under cProfile (the
CLI's own functions by cumulative time; ``poll`` is the wait for ip/nft), nothing timed.
"""

from __future__ import annotations

import argparse
import contextlib
import pstats
import resource
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from bench_nat import FIREROUTE, Bench  # noqa: E402

from fireroute.lab.sandbox import Sandbox  # noqa: E402

V6 = ["--ipv6"]


def single(b: Bench, runs: int) -> dict[str, list[float]]:
    b.fr("up", "keep4")
    b.fr("up", "keep6", *V6)
    t: dict[str, list[float]] = {k: [] for k in ("up4", "down4", "up6", "down6")}
    for _ in range(runs):
        t["up4"].append(b.fr("up", "one"))
        t["down4"].append(b.fr("down", "one"))
        t["up6"].append(b.fr("up", "one", *V6))
        t["down6"].append(b.fr("down", "one"))
    b.fr("down", "--all")
    return t


def batch(b: Bench, n: int, runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per VM: wall times, and CPU times (fireroute's and its ip/nft processes': what moves
    least on a shared machine)."""
    t: dict[str, list[float]] = {k: [] for k in ("up4", "down4", "up6", "down6")}
    cpu: dict[str, list[float]] = {k: [] for k in t}

    def timed(key: str, *args: str) -> None:
        before = children_cpu()
        t[key].append(b.fr(*args) / n)
        cpu[key].append((children_cpu() - before) / n)

    for _ in range(runs):
        for kind, extra in (("4", []), ("6", V6)):
            timed("up" + kind, "up", "--count", str(n), *extra)
            timed("down" + kind, "down", "--all")
    return t, cpu


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def profile(b: Bench, n: int, tmp: Path, top: int = 25) -> None:
    """One batch of each kind up and down under cProfile: fireroute's functions (and the
    wait for its processes) by cumulative time."""
    for kind, extra in (("v4 only", []), ("dual stack", V6)):
        for args in (["up", "--count", str(n), *extra], ["down", "--all"]):
            out = tmp / "fr.prof"
            wall = b.timed([sys.executable, "-m", "cProfile", "-o", str(out), FIREROUTE, *args])
            print(f"== {kind}: {' '.join(args)} ({wall:.3f} s under cProfile)")
            stats = pstats.Stats(str(out))
            stats.sort_stats("cumulative").print_stats("fireroute/|poll", top)


def show(title: str, t: dict[str, list[float]]) -> None:
    print(title)
    for verb in ("up", "down"):
        four, six = statistics.median(t[verb + "4"]), statistics.median(t[verb + "6"])
        print(f"  {verb:5} v4 {four * 1e3:8.3f} ms   dual {six * 1e3:8.3f} ms   "
              f"ratio {six / four:5.2f}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="single VM cycles of each kind")
    ap.add_argument("--n", type=int, default=1000, help="VMs in a batch")
    ap.add_argument("--batch-runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="profile one batch of each kind")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            sb0 = stack.enter_context(Sandbox(prefix="frv6b"))
            profile(Bench(sb0, Path(tmp) / "profile.db"), args.n, Path(tmp))
            return 0
        sb = stack.enter_context(Sandbox(prefix="frv6b"))
        b = Bench(sb, Path(tmp) / "single.db")
        show(f"one VM, cold process, {args.runs} runs of each (per verb)", single(b, args.runs))
        sb2 = stack.enter_context(Sandbox(prefix="frv6b"))
        b2 = Bench(sb2, Path(tmp) / "batch.db")
        t, cpu = batch(b2, args.n, args.batch_runs)
        show(f"batch of {args.n}, {args.batch_runs} runs of each (per VM, wall)", t)
        show("  the same, CPU of fireroute and its ip/nft processes (per VM)", cpu)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
