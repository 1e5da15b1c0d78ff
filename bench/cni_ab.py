"""The CNI plugin of two revisions, interleaved call by call: one more attachment (ADD, then
its DEL) beside ``--present`` others, the two plugins taking turns (the order flipped every
round), on one state file in one throwaway sandbox. Separate runs of ``bench/cni.py --rev``
move more between minutes on a shared machine than a few milliseconds of difference.

    sudo .venv/bin/python bench/cni_ab.py --base 9b29aef --head HEAD [--runs 30] [--present 10]

Prints the median ADD and DEL of each (ms). Each revision runs as a ``git archive`` snapshot
through its own ``scripts/fireroute``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from suite import cni_env  # noqa: E402

from fireroute.lab.sandbox import Sandbox  # noqa: E402


def snapshot(rev: str, into: Path) -> str:
    """The launcher of ``rev``'s ``git archive`` (src and scripts) under ``into``."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", rev, "src", "scripts"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into / "scripts" / "fireroute")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--head", default="HEAD")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--present", type=int, default=10)
    args = ap.parse_args()
    with Sandbox(prefix="frcab") as sb, tempfile.TemporaryDirectory() as tmp:
        plugins = {
            "base": snapshot(args.base, Path(tmp) / "base"),
            "head": snapshot(args.head, Path(tmp) / "head"),
        }
        state = str(Path(tmp) / "state.db")
        conf = json.dumps(
            {"cniVersion": "1.0.0", "name": "frbench", "type": "fireroute", "state": state}
        )
        made: list[str] = []

        def netns(name: str) -> str:
            full = f"{sb.host}-{name}"
            subprocess.run(["ip", "netns", "add", full], check=True)
            made.append(full)
            return full

        def call(which: str, command: str, ns: str, container: str) -> float:
            t = time.perf_counter()
            p = subprocess.run(
                ["nsenter", f"--net=/var/run/netns/{sb.host}", plugins[which]],
                input=conf,
                text=True,
                capture_output=True,
                env=cni_env(command, ns, container),
            )
            dt = time.perf_counter() - t
            if p.returncode != 0:
                raise SystemExit(f"{which} {command} failed: {p.stdout}{p.stderr}")
            return dt

        try:
            for i in range(args.present):
                call("head", "ADD", netns(f"p{i}"), f"p{i}")
            probe = netns("probe")
            t: dict[str, list[float]] = {"base": [], "head": [], "base del": [], "head del": []}
            for r in range(args.runs):
                for which in ("base", "head") if r % 2 else ("head", "base"):
                    t[which].append(call(which, "ADD", probe, f"q{r}{which}"))
                    t[which + " del"].append(call(which, "DEL", probe, f"q{r}{which}"))
        finally:
            for ns in made:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    print(f"one more attachment beside {args.present}, {args.runs} interleaved runs (median ms)")
    for verb, key in (("ADD", ""), ("DEL", " del")):
        base, head = (statistics.median(t[w + key]) * 1e3 for w in ("base", "head"))
        print(f"  {verb}: {args.base} {base:.1f}, {args.head} {head:.1f}, ratio {head / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
