"""fireroute's CNI plugin against Debian's ``ptp`` plugin (host-local IPAM, ipMasq), called as
a runtime calls a plugin (a cold process, CNI_* in the environment, the configuration on
stdin, in the host namespace), everything in throwaway namespaces.

    sudo .venv/bin/python bench/cni.py                # 30 interleaved runs, 10 vs 1000
    sudo .venv/bin/python bench/cni.py --rev HEAD     # measure a commit's snapshot

1. one attachment: ADD and DEL, median and p95, fireroute vs ptp, interleaved (each run in a
   fresh container namespace, as a runtime has);
2. scale: the cost of one more ADD (and its DEL) with 10 attachments present and with 1000,
   for both plugins.
Prints the ratios; writes bench/results/cni-<stamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
import bench_nat  # noqa: E402
from bench_nat import med, p95  # noqa: E402
from suite import CNI_CONF, CNI_DIR, cni_env, log, prepare_code  # noqa: E402

from fireroute.lab.sandbox import Sandbox  # noqa: E402

PREFIX = "frcnib"


class Plugins:
    """Calls of either plugin in the sandbox's host namespace."""

    def __init__(self, sb: Sandbox, tmp: Path) -> None:
        self.sb = sb
        self.fr_conf = json.dumps(
            {"cniVersion": "1.0.0", "name": "frbench", "type": "fireroute",
             "state": str(tmp / "state.db")}
        )  # fmt: skip
        self.ptp_conf = json.dumps(
            {**CNI_CONF, "ipam": {**CNI_CONF["ipam"], "dataDir": str(tmp / "cni-ipam")}}
        )
        self.made: list[str] = []

    def netns(self, name: str) -> str:
        full = f"{self.sb.host}-{name}"
        subprocess.run(["ip", "netns", "add", full], check=True)
        self.made.append(full)
        return full

    def call(self, plugin: str, command: str, netns: str, container: str) -> float:
        argv = [bench_nat.FIREROUTE] if plugin == "fireroute" else [str(CNI_DIR / "ptp")]
        conf = self.fr_conf if plugin == "fireroute" else self.ptp_conf
        env = {
            **cni_env(command, netns, container),
            **{k: v for k, v in os.environ.items() if k.startswith("PYTHON")},
        }
        return timed(self.sb, argv, env, conf, f"{plugin} {command}")

    def close(self) -> None:
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def timed(sb: Sandbox, argv: list[str], env: dict[str, str], stdin: str, what: str) -> float:
    """Seconds ``argv`` took in the sandbox's host namespace (a failure ends the bench)."""
    t = time.perf_counter()
    p = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{sb.host}", *argv],
        input=stdin,
        text=True,
        capture_output=True,
        env=env,
    )
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{what} failed: {p.stdout}{p.stderr}")
    return dt


def ms(xs: list[float]) -> dict[str, float]:
    return {"median_ms": med(xs) * 1e3, "p95_ms": p95(xs) * 1e3, "n": len(xs)}


def single(p: Plugins, runs: int) -> dict[str, dict[str, float]]:
    log(f"1. one attachment, cold process, {runs} interleaved runs of each plugin")
    t: dict[str, list[float]] = {k: [] for k in ("fr_add", "fr_del", "ptp_add", "ptp_del")}
    for i in range(runs):
        ns = p.netns(f"s{i}")
        t["fr_add"].append(p.call("fireroute", "ADD", ns, f"s{i}"))
        t["fr_del"].append(p.call("fireroute", "DEL", ns, f"s{i}"))
        t["ptp_add"].append(p.call("ptp", "ADD", ns, f"s{i}"))
        t["ptp_del"].append(p.call("ptp", "DEL", ns, f"s{i}"))
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        p.made.remove(ns)
    return {k: ms(v) for k, v in t.items()}


def scale(p: Plugins, plugin: str, sizes: list[int], runs: int) -> dict[str, dict]:
    """The cost of one more attachment (ADD, then its DEL) with ``n`` present."""
    out: dict[str, dict] = {}
    present = 0
    probe = p.netns(f"{plugin[:3]}-probe")
    for n in sizes:
        log(f"2. {plugin}: filling to {n} attachments")
        while present < n:
            ns = p.netns(f"{plugin[:3]}{present}")
            p.call(plugin, "ADD", ns, f"{plugin[:3]}{present}")
            present += 1
        adds, dels = [], []
        for r in range(runs):
            adds.append(p.call(plugin, "ADD", probe, f"probe{r}"))
            dels.append(p.call(plugin, "DEL", probe, f"probe{r}"))
        out[str(n)] = {"add": ms(adds), "del": ms(dels)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--sizes", default="10,1000")
    ap.add_argument("--scale-runs", type=int, default=15)
    ap.add_argument("--rev", help="measure this commit's snapshot (git archive)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/cni.py: run as root (it creates network namespaces)")
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        info = prepare_code(args.rev, tmp)
        results: dict[str, object] = {"code": info, "runs": args.runs}
        sb = stack.enter_context(Sandbox(prefix=PREFIX))
        p = Plugins(sb, tmp)
        stack.callback(p.close)
        results["single"] = one = single(p, args.runs)
        for plugin in ("fireroute", "ptp"):
            with contextlib.ExitStack() as st:
                # each plugin's scale run in a sandbox of its own: neither sees the other's
                sb2 = st.enter_context(Sandbox(prefix=PREFIX))
                p2 = Plugins(sb2, tmp / plugin)
                (tmp / plugin).mkdir()
                st.callback(p2.close)
                results[f"scale_{plugin}"] = scale(p2, plugin, sizes, args.scale_runs)
    lo, hi = str(sizes[0]), str(sizes[-1])
    fs, ps = results["scale_fireroute"], results["scale_ptp"]  # type: ignore[index]
    lines = [
        f"code: {info.get('commit')} ({info['rev']})",
        "1. one attachment, cold process (median / p95 ms)",
        *(
            f"   {verb}: fireroute {one[f'fr_{verb}']['median_ms']:.1f} / "
            f"{one[f'fr_{verb}']['p95_ms']:.1f}, ptp {one[f'ptp_{verb}']['median_ms']:.1f} / "
            f"{one[f'ptp_{verb}']['p95_ms']:.1f}, ratio "
            f"{one[f'fr_{verb}']['median_ms'] / one[f'ptp_{verb}']['median_ms']:.2f}"
            for verb in ("add", "del")
        ),
        f"2. one more attachment with {lo} vs {hi} present (median ms)",
        *(
            f"   {name} {verb}: {d[lo][verb]['median_ms']:.1f} at {lo}, "
            f"{d[hi][verb]['median_ms']:.1f} at {hi}, ratio "
            f"{d[hi][verb]['median_ms'] / d[lo][verb]['median_ms']:.2f}"
            for name, d in (("fireroute", fs), ("ptp", ps))
            for verb in ("add", "del")
        ),
    ]
    print("\n".join(lines))
    write_results("cni", results)
    return 0


def write_results(kind: str, results: dict) -> None:
    """bench/results/KIND-<stamp>.json"""
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"{kind}-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
