"""The daemon's own work for a CNI ADD and DEL (what its log's ``ms`` counts, without the
client), interleaved call by call in one process: the container namespace's groups done
in-process (kernel/nsexec.py, as the daemon does them) against the same groups through
``nsenter … ip/sysctl/tc`` processes (before it), on the daemon's ``Host(in_process=True,
quiet=True)``, beside ``--resident`` attachments that stay up (the table exists).

    sudo .venv/bin/python bench/daemon_cni.py --runs 40

Prints medians and p90 (ms) and the processes each way started per ADD and DEL.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from fireroute.lab.sandbox import Sandbox  # noqa: E402

CHILD = r"""
import json, sys, time
from fireroute.api import Host
from fireroute.handoff import serve_cni
from fireroute.kernel import nsexec, run

state, prefix, runs, resident = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
real_group, real_child, started = nsexec.run_group, run.Child.__init__, []

def counted(self, argv, *a, **k):
    started.append(argv[0])
    return real_child(self, argv, *a, **k)

run.Child.__init__ = counted
host = Host(state, in_process=True, quiet=True)
conf = json.dumps({"cniVersion": "1.0.0", "name": "frbench", "type": "fireroute", "state": state})

def call(verb, container, ns):
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0",
           "CNI_NETNS": f"/var/run/netns/{prefix}-{ns}", "CNI_PATH": "/usr/lib/cni"}
    started.clear()
    t = time.perf_counter()
    out = serve_cni(host, env, conf)
    dt = time.perf_counter() - t
    assert out["code"] == 0, out
    return dt, len(started)

for k in range(resident):
    call("ADD", f"resident{k}", f"r{k}")
times = {f"{v} {w}": [] for v in ("ADD", "DEL") for w in ("in-process", "processes")}
procs = {}
for i in range(runs):
    for way in ("in-process", "processes"):
        nsexec.run_group = real_group if way == "in-process" else (lambda *a: None)
        for verb in ("ADD", "DEL"):
            dt, n = call(verb, f"c{i}", "c")
            times[f"{verb} {way}"].append(dt)
            procs[f"{verb} {way}"] = n
print(json.dumps({"times": times, "processes": procs}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--resident", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/daemon_cni.py: run as root (it creates network namespaces)")
    made: list[str] = []
    with Sandbox(prefix="frdc") as sb:
        try:
            for name in ["c", *(f"r{k}" for k in range(args.resident))]:
                subprocess.run(["ip", "netns", "add", f"{sb.host}-{name}"], check=True)
                made.append(f"{sb.host}-{name}")
            state = f"/tmp/{sb.host}.db"
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
            argv = ["nsenter", f"--net=/var/run/netns/{sb.host}", sys.executable, "-c", CHILD]
            argv += [state, sb.host, str(args.runs), str(args.resident)]
            p = subprocess.run(argv, capture_output=True, text=True, env=env)
            if p.returncode != 0:
                raise SystemExit(p.stderr)
            doc = json.loads(p.stdout)
        finally:
            for ns in made:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            for suffix in ("", "-journal", "-wal", "-shm", ".lock"):
                Path(f"/tmp/{sb.host}.db{suffix}").unlink(missing_ok=True)
    load = os.getloadavg()[0]
    print(f"{args.runs} interleaved runs, {args.resident} resident, load {load:.1f}")
    for key, xs in doc["times"].items():
        xs = sorted(xs)
        med, p90 = xs[len(xs) // 2] * 1e3, xs[len(xs) * 9 // 10] * 1e3
        print(f"  {key}: median {med:.1f} ms, p90 {p90:.1f} ms, {doc['processes'][key]} processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
