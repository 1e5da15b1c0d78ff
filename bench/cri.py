"""Pod sandboxes through containerd's CRI, as kubelet makes them: fireroute against Debian's
``ptp`` (+ ``host-local``, ``portmap``), interleaved in one run, each pod with one hostPort.
Three containerds of the test harness (tests/cri/containerd.py: Debian 12's containerd 1.6 in
a private mount and pid namespace, its state in a temp dir) share one throwaway node
namespace: one with docs/cni.md's Kubernetes conflist (host-local in the node's pod CIDR,
``allowPeers``, ``portMappings``), one with the same but fireroute's own pool in place of
host-local, one with ptp (each in a subnet of its own).

    sudo .venv/bin/python bench/cri.py [-n 15]

Per pod: ``RunPodSandbox``, ``StopPodSandbox`` (the DEL with the namespace), then
``RemovePodSandbox`` (containerd stops again: a DEL without it), each timed alone; the
containerds take turns, in the reverse order every other round, after one warm-up pod each
that is not counted. Prints the table for bench/RESULTS.md (medians and p95s; the ratios to
ptp as the median of each round's ratio) with the command and the commit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the tests package (the containerd harness)
sys.path.insert(0, str(HERE.parent / "src"))
from bench_nat import med, p95  # noqa: E402

from fireroute.lab.sandbox import Sandbox  # noqa: E402
from tests.cri.conftest import PLUGINS, conflist  # noqa: E402
from tests.cri.containerd import Containerd  # noqa: E402

PTP = {
    "cniVersion": "1.0.0",
    "name": "ptpnet",
    "plugins": [
        {"type": "ptp", "ipMasq": True, "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
PTP_PLUGINS = {p: f"/usr/lib/cni/{p}" for p in ("ptp", "host-local", "portmap", "loopback")}
CALLS = ("RunPodSandbox", "StopPodSandbox", "RemovePodSandbox")
NAMES = ("fireroute + host-local", "fireroute, own pool", "ptp + host-local + portmap")


def pod_times(ct: Containerd, name: str) -> list[float]:
    """One pod's life: the seconds of each of CALLS."""
    api, rt = ct.api, ct.runtime
    t0 = time.perf_counter()
    pod = ct.run_pod(name, ports=[(8080, 80)])
    t1 = time.perf_counter()
    rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=ct.timeout)
    t2 = time.perf_counter()
    rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=ct.timeout)
    return [t1 - t0, t2 - t1, time.perf_counter() - t2]


def commit() -> str:
    p = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(HERE), "diff", "--quiet", "HEAD"]).returncode
    return p.stdout.strip() + ("+dirty" if dirty else "")


def pooled(state: Path) -> dict:
    """The Kubernetes conflist with fireroute's own pool in place of host-local."""
    conf = conflist(state, "frpool")
    entry = conf["plugins"][0]
    del entry["ipam"]
    entry["pool"] = "10.23.0.0/16"
    return conf


def run(n: int) -> dict[str, list[list[float]]]:
    times: dict[str, list[list[float]]] = {name: [] for name in NAMES}
    with tempfile.TemporaryDirectory(prefix="fireroute-bench-cri-") as tmp, Sandbox("frcrib") as sb:
        node = f"/var/run/netns/{sb.host}"
        d = Path(tmp)
        with (
            Containerd(node, conflist(d / "state.db"), PLUGINS) as fr,
            Containerd(node, pooled(d / "pool.db"), PLUGINS) as pool,
            Containerd(node, PTP, PTP_PLUGINS) as ptp,
        ):
            cts = list(zip(NAMES, (fr, pool, ptp), strict=True))
            for _, ct in cts:  # warm-up: not counted
                pod_times(ct, "warm")
            for i in range(n):
                for name, ct in cts if i % 2 == 0 else cts[::-1]:
                    times[name].append(pod_times(ct, f"b{i}"))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=15, help="pods per plugin (default 15)")
    n = ap.parse_args().n
    times = run(n)
    col = {name: list(zip(*rows, strict=True)) for name, rows in times.items()}
    ms = lambda xs: f"{xs * 1000:.0f}"  # noqa: E731
    print(f"bench/cri.py -n {n} at {commit()}; median / p95 in ms, {n} pods each, interleaved")
    print(f"| call | {' | '.join(NAMES)} | {NAMES[0]} / ptp | {NAMES[1]} / ptp |")
    print("|---" * (len(NAMES) + 3) + "|")
    for k, call in enumerate(CALLS):
        xs = [col[name][k] for name in NAMES]
        cells = [f"{ms(med(x))} / {ms(p95(x))}" for x in xs]
        # each round's own ratio (its pods ran back to back), their median: a load that
        # drifts during the run moves both sides of a round alike
        ratios = [f"{med([a / b for a, b in zip(x, xs[-1], strict=True)]):.2f}" for x in xs[:-1]]
        print(f"| `{call}` | {' | '.join(cells + ratios)} |")


if __name__ == "__main__":
    main()
