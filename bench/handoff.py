"""The hand-off to the daemon (issue 25) against in-process and Debian's ``ptp``, in one run:
CNI ADD and DEL as a runtime calls them (a cold process of the launcher, ``python3 -S``), with
``daemonSocket`` (a ``fireroute serve`` started here) and without, beside ``ptp``; and the
CLI's ``up`` and ``down`` with ``FIREROUTE_SOCKET`` and without. Interleaved run by run, in
throwaway namespaces (fireroute.lab.sandbox).

    sudo .venv/bin/python bench/handoff.py                # 30 runs
    sudo .venv/bin/python bench/handoff.py --rev HEAD     # measure a commit's snapshot
    sudo .venv/bin/python bench/handoff.py --resident 1   # beside a pod that stays up

``--resident N`` keeps N attachments up through the run (a node with pods): fireroute's table
then exists, so an ADD does not create it (``nft -f -`` and the FORWARD-policy read, once per
table) and its set elements go in through netlink: the daemon's ADD starts no process at all.

Where the time of a hand-off goes: the daemon logs each request's time inside it (``ms``); the
rest of the client's wall time is the process (interpreter start, imports, connection).
Prints medians, p95 and ratios; writes bench/results/handoff-<stamp>.json.
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
from cni import PREFIX, Plugins, ms, timed, write_results  # noqa: E402
from suite import log, prepare_code  # noqa: E402

from fireroute.lab.sandbox import Sandbox  # noqa: E402


class Daemon:
    """``fireroute serve`` in the sandbox's host namespace, on the plugin's state file."""

    def __init__(self, sb: Sandbox, tmp: Path, state: Path) -> None:
        self.sock, self.log = str(tmp / "serve.sock"), tmp / "serve.log"
        argv = ["nsenter", f"--net=/var/run/netns/{sb.host}", bench_nat.FIREROUTE, "serve"]
        argv += ["--socket", self.sock, "--state", str(state)]
        self.proc = subprocess.Popen(argv, stderr=self.log.open("w"))
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def inside(self, verb: str) -> list[float]:
        """The daemon's own time (ms) for each request of ``verb``, in order."""
        lines = [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]
        return [x["ms"] / 1e3 for x in lines if x.get("verb") == verb and x.get("status") == 200]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def cli(sb: Sandbox, env: dict[str, str], *argv: str) -> float:
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}
    full.update({k: v for k, v in os.environ.items() if k.startswith("PYTHON")})
    return timed(sb, [bench_nat.FIREROUTE, *argv], full, "", f"fireroute {' '.join(argv)}")


def run(p: Plugins, d: Daemon, sb: Sandbox, state: Path, runs: int) -> dict[str, list[float]]:
    here_conf = p.fr_conf
    there_conf = json.dumps({**json.loads(here_conf), "daemonSocket": d.sock})
    keys = ("cni_add", "cni_del", "cni_add_d", "cni_del_d", "ptp_add", "ptp_del")
    t: dict[str, list[float]] = {k: [] for k in (*keys, "up", "down", "up_d", "down_d")}
    here, there = {"FIREROUTE_STATE": str(state)}, {"FIREROUTE_SOCKET": d.sock}
    for i in range(runs):
        ns = p.netns(f"h{i}")
        for suffix, conf in (("", here_conf), ("_d", there_conf)):
            p.fr_conf = conf
            t[f"cni_add{suffix}"].append(p.call("fireroute", "ADD", ns, f"h{i}"))
            t[f"cni_del{suffix}"].append(p.call("fireroute", "DEL", ns, f"h{i}"))
        t["ptp_add"].append(p.call("ptp", "ADD", ns, f"h{i}"))
        t["ptp_del"].append(p.call("ptp", "DEL", ns, f"h{i}"))
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        p.made.remove(ns)
        for suffix, env in (("", here), ("_d", there)):
            t[f"up{suffix}"].append(cli(sb, env, "up", f"v{i}"))
            t[f"down{suffix}"].append(cli(sb, env, "down", f"v{i}"))
    p.fr_conf = here_conf
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rev", help="measure this commit's snapshot (git archive)")
    ap.add_argument("--resident", type=int, default=0, help="attachments kept up meanwhile")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/handoff.py: run as root (it creates network namespaces)")
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        info = prepare_code(args.rev, tmp)
        sb = stack.enter_context(Sandbox(prefix=PREFIX))
        p = Plugins(sb, tmp)
        stack.callback(p.close)
        d = Daemon(sb, tmp, tmp / "state.db")
        stack.callback(d.stop)
        for k in range(args.resident):
            p.call("fireroute", "ADD", p.netns(f"r{k}"), f"resident{k}")
        log(f"{args.runs} interleaved runs: CNI ADD/DEL here, via the daemon, ptp; CLI up/down")
        t = run(p, d, sb, tmp / "state.db", args.runs)
        inside = {"cni_add_d": d.inside("cni")[0::2], "cni_del_d": d.inside("cni")[1::2]}
        inside |= {"up_d": d.inside("up"), "down_d": d.inside("down")}
    results = {"code": info, "runs": args.runs, "resident": args.resident}
    results["times"] = {k: ms(v) for k, v in t.items()}
    results["daemon_inside"] = {k: ms(v) for k, v in inside.items() if v}
    m = {k: med(v) * 1e3 for k, v in t.items()}
    q = {k: p95(v) * 1e3 for k, v in t.items()}
    within = {k: med(v) * 1e3 for k, v in inside.items() if v}

    def row(name: str, key: str, base: str) -> str:
        extra = f" (in the daemon {within[key]:.1f})" if key in within else ""
        return (
            f"   {name}: {m[key]:.1f} / {q[key]:.1f}{extra}, "
            f"{m[key] / m[base]:.2f}x {base.replace('_', ' ')}"
        )

    lines = [
        f"code: {info.get('commit')} ({info['rev']}), {args.resident} resident attachment(s)",
        "CNI, cold process (median / p95 ms)",
        row("ADD in-process", "cni_add", "ptp_add"),
        row("ADD via the daemon", "cni_add_d", "ptp_add"),
        row("ADD ptp", "ptp_add", "ptp_add"),
        row("DEL in-process", "cni_del", "ptp_del"),
        row("DEL via the daemon", "cni_del_d", "ptp_del"),
        row("DEL ptp", "ptp_del", "ptp_del"),
        "CLI (median / p95 ms)",
        row("up in-process", "up", "up"),
        row("up via the daemon", "up_d", "up"),
        row("down in-process", "down", "down"),
        row("down via the daemon", "down_d", "down"),
    ]
    print("\n".join(lines))
    write_results("handoff", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
