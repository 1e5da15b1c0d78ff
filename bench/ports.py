"""Published ports and egress policy at scale, everything in throwaway namespaces.

    sudo .venv/bin/python bench/ports.py                # 20 vs 4000 VMs
    sudo .venv/bin/python bench/ports.py --big 1000     # shorter

Every VM has two published ports (on every host address) and a 10-CIDR allow-list under
``--egress none``; the VMs are made through the Python API in one process (in-process netlink,
as a platform's daemon would). Then, in one run:
1. ``fireroute publish VM PORT`` + ``unpublish`` and ``fireroute policy VM --allow-out ...`` +
   ``--reset`` of one VM, and ``up`` + ``down`` of one more VM with the same ports and
   allow-list, cold processes, with 20 VMs up and with BIG;
2. forwarding (64 B UDP, guest -> host -> internet, as bench/suite.py section 4 measures it)
   through a VM with the same ports and allow-list, with 1 VM up and with BIG.
Prints the ratios; writes bench/results/ports-<stamp>.json.
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
from bench_nat import med  # noqa: E402
from suite import TABLE, Datapath, Netns, fr_bin, fresh_sandbox, log, prepare_code, sh  # noqa: E402

ALLOW = [f"198.51.{i}.0/24" for i in range(9)] + ["203.0.113.0/24"]  # the internet ns is in it
FILL = """
import sys
import fireroute
host = fireroute.Host(sys.argv[1], in_process=True)
allow = sys.argv[3].split(",")
for i in range(int(sys.argv[2])):
    host.up(f"p{i}", table=sys.argv[4], publish=[f"{10000 + 2 * i}:80", f"{10001 + 2 * i}:22"],
            egress="none", allow_out=allow)
"""


def fill(b: bench_nat.Bench, n: int) -> float:
    src = str(Path(fr_bin()).resolve().parent.parent / "src")  # --rev: the snapshot's, too
    env = {**b.env, "PYTHONPATH": src}
    t = time.perf_counter()
    argv = [sys.executable, "-c", FILL, b.env["FIREROUTE_STATE"], str(n), ",".join(ALLOW), TABLE]
    subprocess.run(["ip", "netns", "exec", b.sb.host, *argv], check=True, env=env)
    return time.perf_counter() - t


VERBS = ("publish", "unpublish", "policy", "reset", "up", "down")


def verbs(benches: dict[int, bench_nat.Bench], runs: int) -> dict[int, dict[str, float]]:
    """Median ms, by VM count, of publish, unpublish, policy change and policy reset of VM p0,
    and of up and down of one more VM with the same ports and allow-list. Each run does every
    verb at every count in turn, so a machine that slows down mid-run slows both alike."""
    t: dict[int, dict[str, list[float]]] = {n: {v: [] for v in VERBS} for n in benches}
    same = [x for c in ALLOW for x in ("--allow-out", c)]
    more = [x for c in [*ALLOW, "192.0.2.0/24"] for x in ("--allow-out", c)]
    argv = {
        "publish": ["publish", "p0", "30000:8080"],
        "unpublish": ["unpublish", "p0", "30000:8080"],
        "policy": ["policy", "p0", "--egress", "none", *more],
        "reset": ["policy", "p0", "--egress", "none", *same],
        "up": [
            "up",
            "extra",
            "--table",
            TABLE,
            "--publish",
            "31000:80",
            "--publish",
            "31001:22",
            "--egress",
            "none",
            *same,
        ],  # fmt: skip
        "down": ["down", "extra"],
    }
    for r in range(runs):
        log(f"1. verbs, run {r + 1}/{runs}")
        for verb in VERBS:
            for n, b in benches.items():
                t[n][verb].append(b.fr(*argv[verb]))
    return {n: {v: med(x) * 1e3 for v, x in t[n].items()} for n in benches}


def datapath(stack: contextlib.ExitStack, tmp: Path, n: int) -> Datapath:
    sb, b = fresh_sandbox(stack, tmp, f"pdp{n}")
    guest = stack.enter_context(Netns(f"{sb.host}-g")).name
    if n > 1:
        fill(b, n - 1)
    b.fr("up", "dp", "--table", TABLE, "--publish", "40000:80", "--publish", "40001:22",
         "--egress", "none", *(x for c in ALLOW for x in ("--allow-out", c)))  # fmt: skip
    vm = json.loads(sh("ip", "netns", "exec", sb.host, fr_bin(), "show", "dp", "--format", "json",
                       env=b.env))  # fmt: skip
    d = Datapath(f"ports+allow-list, {n} VM", sb, b, guest)
    d.swap_tap_for_veth(vm["tap"], vm["tap_ip"], vm["guest_ip"], vm["prefix"])
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--rev", help="measure this commit's snapshot (git archive)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/ports.py: run as root (it creates network namespaces)")
    out: dict[str, object] = {"big": args.big}
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        out["code"] = info = prepare_code(args.rev, tmp)
        with contextlib.ExitStack() as st:
            benches = {}
            for n in (20, args.big):
                _sb, benches[n] = fresh_sandbox(st, tmp, f"pv{n}")
                log(f"1. {n} VMs with 2 ports and a 10-CIDR allow-list each")
                out[f"fill_{n}_s"] = fill(benches[n], n)
            for n, figures in verbs(benches, args.runs).items():
                out[f"verbs_{n}"] = figures
        log(f"2. datapath: 1 vs {args.big} VMs")
        paths = {1: datapath(stack, tmp, 1), args.big: datapath(stack, tmp, args.big)}
        kpps: dict[int, list[float]] = {1: [], args.big: []}
        for t in range(args.trials):
            for n, d in paths.items():
                log(f"2. datapath trial {t + 1}/{args.trials}: {d.label}")
                kpps[n].append(d.udp(200_000, args.seconds)["kpps"])
        out["udp_kpps"] = {str(n): max(v) for n, v in kpps.items()}
    small, big = out["verbs_20"], out[f"verbs_{args.big}"]  # type: ignore[index]
    lines = [f"code: {info.get('commit')} ({info['rev']})"]
    lines += [
        f"{verb}: {small[verb]:.1f} ms at 20 VMs, {big[verb]:.1f} ms at {args.big}, ratio "
        f"{big[verb] / small[verb]:.2f}"
        for verb in VERBS
    ]
    u = out["udp_kpps"]
    lines.append(
        f"UDP 64 B through a VM with ports and allow-list: {u['1']:.1f} kpps with 1 VM, "  # type: ignore[index]
        f"{u[str(args.big)]:.1f} with {args.big} ({u[str(args.big)] / u['1']:.0%})"  # type: ignore[index]
    )
    lines.append(f"fill: {out[f'fill_{args.big}_s']:.1f} s for {args.big} VMs through the API")
    print("\n".join(lines))
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / f"ports-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
