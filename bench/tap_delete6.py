"""What the kernel charges to delete N taps as one group (``ip link del group G``), set up
as a v4-only NAT VM's (IPv6 off) or as a VM with IPv6's (IPv6 on, no kernel link-local
address, ``fe80::1/64 nodad``, the route to its /64), inside a throwaway network namespace
(the script re-executes itself under ``unshare --net``; IPv6 forwarding on, as with VMs with
IPv6), and what making the v6 parts costs:

    sudo .venv/bin/python bench/tap_delete6.py [--n 1000] [--runs 3]

Kinds, interleaved, a fresh namespace each run; one ``ip -batch`` each, timed (wall, and the
CPU of ``ip``: the kernel's work in its context, what moves least on a shared machine):

- ``v4``: the group delete of taps with IPv6 off;
- ``v6``: the same of taps with IPv6 on;
- ``v6 routes first``: the taps' /64 routes deleted in the same batch, then the group;
- ``v6 all routes first``: every IPv6 route through the taps (the /64, ``fe80::/64``, the
  local ``fe80::1``, the anycast ``fe80::``, ``ff00::/8``), then the group;
- ``v6 own gateway all routes first``: the same with each tap's own gateway
  (``fe80::1:0:0:i``, as a NAT VM's is) in place of ``fe80::1``.

Also the up's v6 parts: the ``fe80::1/64 nodad`` addresses and the /64 routes, each as one
batch.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

MARK = "FRBENCH_TAP_DELETE6"
GROUP = "77"


def batch(lines: list[str]) -> tuple[float, float]:
    """(wall ms, CPU ms of ip) of one ``ip -batch``."""
    before = _cpu()
    t = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    return (time.perf_counter() - t) * 1e3, (_cpu() - before) * 1e3


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def write(path: str, value: str) -> None:
    with open("/proc/sys/" + path, "w") as f:
        f.write(value)


def one(n: int, kind: str) -> dict[str, tuple[float, float]]:
    """Make n taps of ``kind`` and delete them as one group: the batches' times."""
    write("net/ipv6/conf/all/forwarding", "1")
    taps = [f"t{i}" for i in range(n)]
    lines = []
    for i, t in enumerate(taps):
        v4 = f"172.16.{(i * 4) // 256}.{(i * 4) % 256 + 1}/30"
        lines += [f"tuntap add dev {t} mode tap", f"address add {v4} dev {t}"]
        lines.append(f"link set dev {t} group {GROUP} up")
    out = {"taps": batch(lines)}
    v6 = kind != "v4"
    for t in taps:
        write(f"net/ipv6/conf/{t}/disable_ipv6", "0" if v6 else "1")
        if v6:
            write(f"net/ipv6/conf/{t}/addr_gen_mode", "1")
    routes = [f"route del fd00:{i:x}::/64 dev {t}" for i, t in enumerate(taps)]
    own = kind.startswith("v6 own")  # each tap its own gateway (fe80::1:0:0:i), as a VM's
    gws = [f"fe80::1:0:0:{i:x}" if own else "fe80::1" for i in range(n)]
    if v6:
        out["v6 addresses"] = batch(
            [f"address add {g}/64 dev {t} nodad" for g, t in zip(gws, taps, strict=True)]
        )
        out["v6 routes"] = batch([r.replace(" del ", " add ") for r in routes])
    first: list[str] = []
    if kind == "v6 routes first":
        first = routes
    elif kind.endswith("all routes first"):
        for r, t, g in zip(routes, taps, gws, strict=True):
            first += [r, f"route del fe80::/64 dev {t}"]
            local = (f"local {g}", *KERNEL_LOCAL[1:])
            first += [f"route del {k} dev {t} table local" for k in local]
    out["delete"] = batch([*first, f"link del group {GROUP}"])
    return out


KERNEL_LOCAL = ("local fe80::1", "anycast fe80::", "multicast ff00::/8")
"""the routes the kernel makes in the local table for a v6 tap (with forwarding on)"""
KINDS = ("v4", "v6", "v6 routes first", "v6 all routes first", "v6 own gateway all routes first")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.environ.get(MARK) == "1":
        for k, (wall, cpu) in one(args.n, args.one).items():
            print(f"{k}\t{wall:.1f}\t{cpu:.1f}")
        return 0
    got = unshared(__file__, MARK, args.n, args.runs, args.kinds.split(","))
    print(f"{args.n} taps, {args.runs} runs, medians: wall ms / CPU ms of ip")
    print_medians(got)
    return 0


def unshared(
    script: str, mark: str, n: int, runs: int, kinds: list[str]
) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """``script --n N --one KIND`` under ``unshare --net`` (a fresh namespace each), kinds
    interleaved, ``runs`` rounds: its ``what<TAB>wall<TAB>cpu`` lines by (kind, what)."""
    env = {**os.environ, mark: "1"}
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(runs):
        for kind in kinds:
            argv = ["unshare", "--net", sys.executable, script, "--n", str(n), "--one", kind]
            res = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            for line in res.stdout.splitlines():
                what, wall, cpu = line.split("\t")
                got.setdefault((kind, what), []).append((float(wall), float(cpu)))
    return got


def print_medians(got: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
    """The medians of :func:`unshared`'s times, as a markdown table."""
    print("| kind | batch | wall | CPU |\n|---|---|---|---|")
    for (kind, what), times in got.items():
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        print(f"| {kind} | {what} | {wall:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())
