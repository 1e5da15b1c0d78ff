"""Where fireroute spends its time, inside a throwaway sandbox: cProfile (in the fireroute
process) and ``strace -f -c`` (syscalls of fireroute and the ip/nft processes it runs) for one
command, optionally after a batch of VMs is already up.

    sudo .venv/bin/python bench/profile_fr.py --pre 4000 -- up churn --table fr
    sudo .venv/bin/python bench/profile_fr.py --rev HEAD -- up --count 4000 --prefix v
    sudo .venv/bin/python bench/profile_fr.py --pre 4000 --strace --undo 'down churn' -- up churn

Prints the wall time, the top functions by cumulative time, and (with --strace) the syscall
summary and the programs executed. Writes nothing outside a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from suite import TABLE, fr_bin, fresh_sandbox, prepare_code, sweep  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pre", type=int, default=0, help="VMs brought up first (not profiled)")
    ap.add_argument("--rev", help="profile a snapshot of this commit")
    ap.add_argument("--strace", action="store_true", help="also strace -f -c the command")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--undo", help="fireroute args run unmeasured after each run ('down churn')")
    ap.add_argument("args", nargs="+", help="fireroute arguments (after --)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    try:
        with tempfile.TemporaryDirectory() as tmpd, contextlib.ExitStack() as stack:
            tmp = Path(tmpd)
            print(prepare_code(a.rev, tmp))
            sb, b = fresh_sandbox(stack, tmp, "prof")
            if a.pre:
                b.fr("up", "--count", str(a.pre), "--prefix", "p", "--table", TABLE)
            prof = tmp / "fr.prof"
            t = time.perf_counter()
            b.timed([sys.executable, "-m", "cProfile", "-o", str(prof), fr_bin(), *a.args])
            print(f"wall (under cProfile): {time.perf_counter() - t:.3f} s")
            pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(a.top)
            if a.undo:
                b.fr(*a.undo.split())
            if a.strace:
                out, execs = tmp / "strace.txt", tmp / "exec.txt"
                b.timed(["strace", "-f", "-c", "-o", str(out), fr_bin(), *a.args])
                print(out.read_text())
                if a.undo:
                    b.fr(*a.undo.split())
                trace = ["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(execs)]
                b.timed([*trace, fr_bin(), *a.args])
                progs = [
                    ln.split('execve("', 1)[1].split('"', 1)[0]
                    for ln in execs.read_text().splitlines()
                    if 'execve("' in ln
                ]
                print("programs executed:", len(progs))
                for p in sorted(set(progs)):
                    print(f"  {progs.count(p):5d}  {p}")
    finally:
        sweep()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
