"""NAT-mode benchmark: fireroute against the guide's commands, measured side by side in one run,
inside throwaway namespaces (nothing touches the machine's own network).

    sudo .venv/bin/python bench/bench_nat.py [--runs 30] [--n 1000] [--json out.json]

Prints medians and ratios (ratios are what hold on a noisy 2-core machine):
  1. one VM up/down, fresh process each (as an orchestrator calls it), against the guide's
     five per-VM commands as a shell script (and its cleanup: link del, list handles, delete);
  2. N VMs up and down: ``fireroute up --count N`` / ``down --all`` against the guide's
     commands looped N times;
  3. removing one VM's firewall state with 20 and with N VMs up (per-VM cost must stay flat).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from fireroute.lab.sandbox import Sandbox  # noqa: E402

FIREROUTE = str(Path(__file__).resolve().parents[1] / "scripts" / "fireroute")  # as installed
GUIDE_SETUP = """
nft add table firecracker
nft 'add chain firecracker postrouting { type nat hook postrouting priority srcnat; \
  policy accept; }'
nft 'add chain firecracker filter { type filter hook forward priority filter; policy accept; }'
echo 1 > /proc/sys/net/ipv4/ip_forward
"""


def guide_up(i: int) -> str:
    o = 4 * i
    tap, gw, guest = (
        f"tap{i}",
        f"172.17.{(o + 1) // 256}.{(o + 1) % 256}",
        f"172.17.{(o + 2) // 256}.{(o + 2) % 256}",
    )
    return (
        f"ip tuntap add {tap} mode tap\nip addr add {gw}/30 dev {tap}\n"
        f"ip link set {tap} up\n"
        f"nft add rule firecracker postrouting ip saddr {guest} oifname up0 counter "
        "masquerade\n"
        f"nft add rule firecracker filter iifname {tap} oifname up0 accept\n"
    )


def guide_down(i: int) -> str:
    o = 4 * i
    guest = f"172.17.{(o + 2) // 256}.{(o + 2) % 256}"
    # the guide: delete the tap, look the two rules' handles up in the listing, delete them
    return (
        f"ip link del tap{i}\n"
        f"h1=$(nft -a list chain firecracker postrouting | grep -w 'saddr {guest}' "
        "| awk '{print $NF}')\n"
        f"h2=$(nft -a list chain firecracker filter | grep -w '\"tap{i}\"' "
        "| awk '{print $NF}')\n"
        "nft delete rule firecracker postrouting handle $h1\n"
        "nft delete rule firecracker filter handle $h2\n"
    )


class Bench:
    def __init__(self, sb: Sandbox, state: Path) -> None:
        self.sb = sb
        self.env = {**os.environ, "FIREROUTE_STATE": str(state)}

    def timed(self, argv: list[str], stdin: str | None = None) -> float:
        t = time.perf_counter()
        p = subprocess.run(
            ["ip", "netns", "exec", self.sb.host, *argv],
            input=stdin,
            text=True,
            capture_output=True,
            env=self.env,
        )
        dt = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {p.stderr}")
        return dt

    def fr(self, *args: str) -> float:
        return self.timed([FIREROUTE, *args])

    def bash(self, script: str) -> float:
        return self.timed(["bash", "-e", "-s"], script)


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--churn-runs", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates network namespaces")
    results: dict[str, object] = {"runs": args.runs, "n": args.n}
    with tempfile.TemporaryDirectory() as tmp, Sandbox(prefix="frbench") as sb:
        b = Bench(sb, Path(tmp) / "state.db")
        b.bash(GUIDE_SETUP)
        # 1. single VM, cold process
        fr_up, fr_down, g_up, g_down = [], [], [], []
        for _ in range(args.runs):
            fr_up.append(b.fr("up", "one", "--table", "fr"))
            fr_down.append(b.fr("down", "one"))
            g_up.append(b.bash(guide_up(0)))
            g_down.append(b.bash(guide_down(0)))
        results["single"] = {
            "fireroute_up_ms": [med(fr_up) * 1e3, p95(fr_up) * 1e3],
            "fireroute_down_ms": [med(fr_down) * 1e3, p95(fr_down) * 1e3],
            "guide_up_ms": [med(g_up) * 1e3, p95(g_up) * 1e3],
            "guide_down_ms": [med(g_down) * 1e3, p95(g_down) * 1e3],
        }
        # 2. batch
        n = args.n
        t_up = b.fr("up", "--count", str(n), "--prefix", "v", "--table", "fr")
        t_churn_n = churn(b, args.churn_runs)
        t_down = b.fr("down", "--all")
        tg_up = b.bash("".join(guide_up(i) for i in range(n)))
        tg_down = b.bash("".join(guide_down(i) for i in range(n)))
        results["batch"] = {
            "fireroute_up_s": t_up,
            "fireroute_down_s": t_down,
            "guide_up_s": tg_up,
            "guide_down_s": tg_down,
        }
        # 3. churn at 20 vs n
        b.fr("up", "--count", "20", "--prefix", "v", "--table", "fr")
        t_churn_20 = churn(b, args.churn_runs)
        b.fr("down", "--all")
        results["churn"] = {"at_20_ms": t_churn_20 * 1e3, f"at_{n}_ms": t_churn_n * 1e3}
    report(results, n)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def churn(b: Bench, runs: int) -> float:
    """Median time to remove one VM's networking (tap + firewall state), fresh process."""
    times = []
    for _ in range(runs):
        b.fr("up", "churn", "--table", "fr")
        times.append(b.fr("down", "churn"))
    return med(times)


def report(r: dict, n: int) -> None:
    s, bt, c = r["single"], r["batch"], r["churn"]
    rows = [
        ("one VM up (median ms)", s["fireroute_up_ms"][0], s["guide_up_ms"][0]),
        ("one VM up (p95 ms)", s["fireroute_up_ms"][1], s["guide_up_ms"][1]),
        ("one VM down (median ms)", s["fireroute_down_ms"][0], s["guide_down_ms"][0]),
        (f"{n} VMs up (s)", bt["fireroute_up_s"], bt["guide_up_s"]),
        (f"{n} VMs down (s)", bt["fireroute_down_s"], bt["guide_down_s"]),
    ]
    print(f"{'measure':28} {'fireroute':>10} {'guide':>10} {'guide/fireroute':>16}")
    for name, a, g in rows:
        print(f"{name:28} {a:10.3f} {g:10.3f} {g / a:15.2f}x")
    ratio = c[f"at_{n}_ms"] / c["at_20_ms"]
    print(
        f"remove one VM: {c['at_20_ms']:.1f} ms at 20 VMs, {c[f'at_{n}_ms']:.1f} ms at {n} "
        f"VMs (ratio {ratio:.2f})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
