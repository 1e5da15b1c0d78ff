"""Planning a batch ``down`` or ``up`` without root: ``Manager._down_plan`` over N leases of a
real state file (in a temporary directory), or ``Manager._up_plan`` of N new VMs beside
``--have`` VMs already up, the VMs made on the fake kernel (kernel/fake.py) and the reads
answered from it (the runners of tests/unit/test_down.py and test_up_decisions.py). Nothing
touches the machine's network. Times the planning alone (CPU and wall time, best and median of
``--runs``: CPU time moves least on a shared machine), then prints cProfile's top functions
of one more run.

    .venv/bin/python bench/profile_down.py                 # down --all of 1000 NAT VMs
    .venv/bin/python bench/profile_down.py --vms 4000 --going 1 --top 30
    .venv/bin/python bench/profile_down.py --backend iptables --runs 9 --no-profile
    .venv/bin/python bench/profile_down.py --verb up --vms 1000      # up --count 1000
    .venv/bin/python bench/profile_down.py --verb up --have 50 --vms 1 --mode bridge --plan

``--going K``: only the first K VMs go (the rest stay: no threshold read). ``--plan``
prints the plan's commands (to compare two revisions' output). An up's VMs are allocated
(not timed) as ``up`` allocates them; its planning (render, diff, compile) is timed.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from fireroute import allocate, manager  # noqa: E402
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


def host(state: Path, fake: Fake | None = None) -> tuple[manager.Manager, Fake]:
    """A manager over the fake host (what tests/unit/test_down.py's fixture patches)."""
    fake = fake or Fake()
    observe.require_net_admin = lambda action: None  # type: ignore[assignment]
    scope.read_sysctl = lambda key: fake.forwarding  # type: ignore[assignment]
    forwarding.recorded = lambda: None  # type: ignore[assignment]
    m = manager.Manager(state, runner=Host(fake), executor=lambda: Applier(fake))
    return m, fake


MODES = {
    "nat": {},
    "bridge": {"mode": "bridge", "bridge": "br9", "dhcp": True},
    "clone": {"mode": "clone"},
}
"""``--mode``: an up's options besides the backend"""


def up_host(state: Path) -> manager.Manager:
    """A manager over a fake host with an uplink (what tests/unit/test_up_decisions.py's
    fixture patches), applying up's plans to the fake."""
    from fireroute.want.objects import Link
    from tests.unit.test_up_decisions import Apply, UpHost

    fake = Fake()
    fake.seed(Link("eth0", "", "", None, "", group=None))
    fake.seed_route("0.0.0.0/0", "eth0")
    m, _ = host(state, fake)
    m.runner = UpHost(fake)
    m.executor = lambda: Apply(fake)  # type: ignore[assignment,return-value]
    manager.which = lambda tool: f"/usr/sbin/{tool}"  # type: ignore[assignment]
    forwarding.record = lambda value: False  # type: ignore[assignment]
    forwarding.forget = lambda: None  # type: ignore[assignment]
    return m


def up_planner(a: argparse.Namespace, tmp: Path) -> Callable[[], manager.Plan]:
    """``--have`` VMs up (applied to the fake), then ``--vms`` more allocated as up allocates
    them: their planning, to be timed."""
    m = up_host(tmp / "state.db")
    m._store().reserve([], {"instance": "5ca1ab1e"})  # (a known id: plans compare as text)
    options = lambda: Options(backend=a.backend, **MODES[a.mode])  # noqa: E731
    if a.have:
        m.up([f"v{i}" for i in range(a.have)], options())
    store, opts = m._store(), options()
    names = [f"v{i}" for i in range(a.have, a.have + a.vms)]
    _, fresh = m._up_sort(store, names, opts, True)
    vms, view, shape = allocate.new_vms(store, m.runner, fresh, opts, False, None)
    missing = allocate.check_new(store, m.runner, vms, view, fresh, opts)

    def plan() -> manager.Plan:
        draft = manager._UpDraft(vms, opts)
        m._up_plan(draft, store, shape, missing, True)
        return draft.plan

    return plan


def down_planner(a: argparse.Namespace, tmp: Path) -> Callable[[], manager.Plan]:
    """``--vms`` leases made on the fake, the first ``--going`` (all) of them to go."""
    m, fake = host(tmp / "state.db")
    up(m, fake, *(lease(i, a.backend) for i in range(a.vms)))
    store = m._store()
    leases = store.all()
    going = leases if a.going is None else leases[: a.going]
    return lambda: m._down_plan(store, going)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verb", default="down", choices=("down", "up"))
    ap.add_argument("--vms", type=int, default=1000, help="leases (down) or new VMs (up)")
    ap.add_argument("--going", type=int, help="how many go (default: all, as down --all)")
    ap.add_argument("--have", type=int, default=0, help="up: VMs already up beside them")
    ap.add_argument("--mode", default="nat", choices=tuple(MODES), help="up: the VMs' mode")
    ap.add_argument("--backend", default="nft", choices=("nft", "iptables"))
    ap.add_argument("--runs", type=int, default=5, help="timed runs (best and median)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--plan", action="store_true", help="print the plan's commands")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plan = (up_planner if a.verb == "up" else down_planner)(a, Path(tmp))
        wall, cpu = [], []
        for _ in range(a.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            p = plan()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        what = f"{a.vms} beside {a.have}" if a.verb == "up" else f"{a.going or a.vms} of {a.vms}"
        print(
            f"_{a.verb}_plan of {what} VMs ({a.backend}, {a.mode if a.verb == 'up' else 'nat'}), "
            f"{a.runs} runs: CPU best "
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
