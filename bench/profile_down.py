"""Planning a batch ``down`` without root: ``Manager._down_plan`` over N leases of a real state
file (in a temporary directory), the VMs made on the fake kernel (kernel/fake.py) and the
reads down makes answered from it (the runner of tests/unit/test_down.py). Nothing touches
the machine's network. Times the planning alone (CPU and wall time, best and median of
``--runs``: CPU time moves least on a shared machine), then prints cProfile's top functions
of one more run.

    .venv/bin/python bench/profile_down.py                 # down --all of 1000 NAT VMs
    .venv/bin/python bench/profile_down.py --vms 4000 --going 1 --top 30
    .venv/bin/python bench/profile_down.py --backend iptables --runs 9 --no-profile

``--going K``: only the first K VMs go (the rest stay: no threshold read). ``--plan``
prints the plan's commands (to compare two revisions' output).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from fireroute import manager  # noqa: E402
from fireroute.kernel import forwarding, observe, scope  # noqa: E402
from fireroute.kernel.fake import Fake  # noqa: E402
from fireroute.model import Options, Vm  # noqa: E402
from fireroute.plan.steps import as_commands  # noqa: E402
from tests.unit.test_down import Applier, Host, up  # noqa: E402


def lease(i: int, backend: str) -> Vm:
    """The i-th NAT VM, as ``up --count`` would number it (a /30 each)."""
    net = IPv4Network((int(IPv4Network("172.16.0.0/30").network_address) + 4 * i, 30))
    mac = "06:00:" + ":".join(f"{b:02X}" for b in net[2].packed)
    return Vm(f"v{i}", net, f"fr-v{i}", mac, "eth0", Options(backend=backend))


def host(state: Path) -> tuple[manager.Manager, Fake]:
    """A manager over the fake host (what tests/unit/test_down.py's fixture patches)."""
    fake = Fake()
    observe.require_net_admin = lambda action: None  # type: ignore[assignment]
    scope.read_sysctl = lambda key: fake.forwarding  # type: ignore[assignment]
    forwarding.recorded = lambda: None  # type: ignore[assignment]
    m = manager.Manager(state, runner=Host(fake), executor=lambda: Applier(fake))
    return m, fake


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=1000, help="leases in the state file")
    ap.add_argument("--going", type=int, help="how many go (default: all, as down --all)")
    ap.add_argument("--backend", default="nft", choices=("nft", "iptables"))
    ap.add_argument("--runs", type=int, default=5, help="timed runs (best and median)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--plan", action="store_true", help="print the plan's commands")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        m, fake = host(Path(tmp) / "state.db")
        up(m, fake, *(lease(i, a.backend) for i in range(a.vms)))
        store = m._store()
        leases = store.all()
        going = leases if a.going is None else leases[: a.going]

        def plan() -> manager.Plan:
            return m._down_plan(store, going)

        wall, cpu = [], []
        for _ in range(a.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            p = plan()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(
            f"_down_plan of {len(going)} of {a.vms} VMs ({a.backend}), {a.runs} runs: CPU best "
            f"{min(cpu) * 1e3:.1f} ms, median {statistics.median(cpu) * 1e3:.1f} ms; wall best "
            f"{min(wall) * 1e3:.1f} ms, median {statistics.median(wall) * 1e3:.1f} ms; "
            f"{len(p.steps)} steps"
        )
        if a.plan:
            print(as_commands(p), end="")
            print("\n".join(f"# {s.what} ({s.vm})" for s in p.steps))
            print(f"# forget {p.forget}")
        if not a.no_profile:
            prof = cProfile.Profile()
            prof.runcall(plan)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(a.top)
            pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
