"""RunPodSandbox and Stop+RemovePodSandbox through containerd's CRI, fireroute against Debian's
``ptp`` (+ ``host-local``, ``portmap``), interleaved in one run, each pod with one hostPort.
Two containerds of the harness (tests/cri/containerd.py) share one throwaway node namespace.

    sudo .venv/bin/python -m tests.cri.bench_runpod [N]    # from the checkout; N pods each (15)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from fireroute.lab.sandbox import Sandbox
from tests.cni.runtime import LAUNCHER
from tests.cri.conftest import LOOPBACK, conflist
from tests.cri.containerd import Containerd

PTP = {
    "cniVersion": "1.0.0",
    "name": "ptpnet",
    "plugins": [
        {"type": "ptp", "ipMasq": True, "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
PTP_PLUGINS = {p: f"/usr/lib/cni/{p}" for p in ("ptp", "host-local", "portmap", "loopback")}


def main(n: int) -> None:
    times: dict[str, tuple[list[float], list[float]]] = {"fireroute": ([], []), "ptp": ([], [])}
    with tempfile.TemporaryDirectory(prefix="fireroute-bench-cri-") as tmp, Sandbox("frcrib") as sb:
        node = f"/var/run/netns/{sb.host}"
        plugins = {"fireroute": str(LAUNCHER), "loopback": LOOPBACK}
        with (
            Containerd(node, conflist(Path(tmp) / "state.db"), plugins) as fr,
            Containerd(node, PTP, PTP_PLUGINS) as ptp,
        ):
            for i in range(n):
                for name, ct in (("fireroute", fr), ("ptp", ptp)):
                    start = time.perf_counter()
                    pod = ct.run_pod(f"b{i}", ports=[(8080, 80)])
                    ran = time.perf_counter()
                    ct.remove_pod(pod)
                    times[name][0].append(ran - start)
                    times[name][1].append(time.perf_counter() - ran)
    for name, (run, remove) in times.items():
        print(
            f"{name:9s}  RunPodSandbox median {statistics.median(run) * 1000:4.0f} ms"
            f"  Stop+RemovePodSandbox median {statistics.median(remove) * 1000:4.0f} ms  (n={n})"
        )
    for i, what in enumerate(("RunPodSandbox", "Stop+RemovePodSandbox")):
        ratio = statistics.median(times["fireroute"][i]) / statistics.median(times["ptp"][i])
        print(f"{what}: fireroute / ptp = {ratio:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
