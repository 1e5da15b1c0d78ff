"""``check`` and ``restore`` with N VMs up, inside throwaway namespaces (nothing touches the
machine's own network).

    sudo .venv/bin/python bench/repair.py [--n 1000] [--runs 7] [--src DIR] [--backend iptables]

Half the VMs have a policy, peers, metadata and a host port (so the policy sets, ``peers``,
``metadata`` and ``host_ports`` hold elements too). Prints the medians (wall and CPU time)
of: ``check`` on a clean host, ``restore`` with nothing to do, and ``restore`` healing one
deleted element (the table declared again with every element; with ``--backend iptables``,
one deleted rule: the VM's block written again). ``--src`` runs another
checkout's ``src`` (a before/after comparison on one machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
from fireroute.lab.sandbox import Sandbox  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--src", type=Path, default=SRC, help="the fireroute source to time")
    ap.add_argument("--backend", choices=["nft", "iptables"], default="nft")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates network namespaces")
    with tempfile.TemporaryDirectory() as tmp, Sandbox(prefix="zqrep") as sb:
        env = {**os.environ, "FIREROUTE_STATE": f"{tmp}/state.db", "PYTHONPATH": str(args.src)}

        def fr(*argv: str, ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
            """(wall, CPU) seconds of one fireroute run: the CPU time (its own and its
            children's: nft, ip) holds still on a shared, loaded machine; the wall time not."""
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            p = subprocess.run(
                ["ip", "netns", "exec", sb.host, sys.executable, "-m", "fireroute", *argv],
                capture_output=True,
                text=True,
                env=env,
            )
            dt = time.perf_counter() - t
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if p.returncode not in ok:
                raise SystemExit(f"fireroute {' '.join(argv)} failed: {p.stderr}{p.stdout}")
            cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
            return dt, cpu

        half = args.n // 2
        fr("up", "--count", str(half), "--prefix", "p", "--backend", args.backend)
        extra = ["--egress", "public", "--allow-out", "10.1.0.0/16", "--allow-peers"]
        if args.backend == "iptables":  # (no policies nor peers there)
            extra = []
        extra += ["--allow-metadata", "--allow-host-port", "53/udp"]
        fr("up", "--count", str(args.n - half), "--prefix", "q", "--backend", args.backend, *extra)
        check = [fr("check") for _ in range(args.runs)]
        idle = [fr("restore") for _ in range(args.runs)]
        heal = []
        for _ in range(args.runs):
            if args.backend == "iptables":  # fr-p0's metadata DROP: its block is written again
                subprocess.run(
                    ["ip", "netns", "exec", sb.host, "iptables-nft", "-D",
                     *_metadata_drop(sb.host, "fr-p0").split()[1:]],
                    check=True,
                )  # fmt: skip
            else:
                subprocess.run(
                    ["ip", "netns", "exec", sb.host, "nft", "delete", "element", "ip",
                     "firecracker", "taps", '{ "fr-p0" }'],
                    check=True,
                )  # fmt: skip
            heal.append(fr("restore"))
        fr("check")
    for what, runs in (("check", check), ("restore, nothing to do", idle), ("restore, heal", heal)):
        wall, cpu = [statistics.median(x) for x in zip(*runs, strict=True)]
        print(f"{what:24} wall {wall:.3f} s, CPU {cpu:.3f} s (medians of {len(runs)})")
    return 0


def _metadata_drop(ns: str, tap: str) -> str:
    """The saved line of a tap's metadata DROP (the comment's quotes left out)."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "iptables-nft-save", "-t", "filter"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(
        line.replace('"', "")
        for line in out.splitlines()
        if line.startswith("-A FORWARD -d 169.254.169.254/32 ") and f" -i {tap} " in line
    )


if __name__ == "__main__":
    sys.exit(main())
