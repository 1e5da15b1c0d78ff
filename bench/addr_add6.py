"""What the kernel charges to give N taps (IPv6 on, no address of the kernel's own) the
address a VM with IPv6 has as its gateway, by kind of address, inside a throwaway network
namespace (the script re-executes itself under ``unshare --net``; IPv6 forwarding on, as with
VMs with IPv6):

    sudo .venv/bin/python bench/addr_add6.py [--n 4000] [--runs 3]

Kinds, interleaved, a fresh namespace each run; the taps made in one ``ip -batch``, then the
addresses in another, timed (wall, and the CPU of ``ip``: the kernel's work in its context):

- ``same``: ``fe80::1/64 nodad`` on every tap (what fireroute does today);
- ``same noprefixroute``: the same without the kernel's ``fe80::/64`` route per tap;
- ``distinct``: a link-local address of its own per tap (``fe80::N/64 nodad``);
- ``distinct noprefixroute``: the same, without the prefix route;
- ``proxy``: no address, a proxy neighbour entry for ``fe80::1`` per tap instead;
- ``own``: what fireroute does since session 14: a gateway of its own per tap
  (``fe80::1:0:0:N/64 nodad``) and the route to the tap's /64;
- ``own /128 metric``: the same gateway as a ``/128`` with ``noprefixroute`` (no anycast
  ``fe80::``), and the tap's ``fe80::/64`` as a route of its own whose metric falls tap by tap
  (each insert at the head of the kernel's list of ``fe80::/64`` routes), and the /64 route:
  measured, not done (docs/ipv6.md, "Speed").

Every tap having the same address puts them all in one bucket of the kernel's address hash
and one node of its routing tree (the local route to the address), each add walking them.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tap_delete6 import print_medians, unshared  # noqa: E402

MARK = "FRBENCH_ADDR_ADD6"
KINDS = ("same", "same noprefixroute", "distinct", "distinct noprefixroute", "proxy")
KINDS += ("own", "own /128 metric")


def batch(lines: list[str]) -> tuple[float, float]:
    """(wall ms, CPU ms of ip) of one ``ip -batch``."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, t = r.ru_utime + r.ru_stime, time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (time.perf_counter() - t) * 1e3, (r.ru_utime + r.ru_stime - before) * 1e3


def one(n: int, kind: str) -> tuple[float, float]:
    """Make n taps, then their addresses of ``kind``: the second batch's times."""
    with open("/proc/sys/net/ipv6/conf/all/forwarding", "w") as f:
        f.write("1")
    taps = [f"t{i}" for i in range(n)]
    batch([x for t in taps for x in (f"tuntap add dev {t} mode tap",
                                     f"link set dev {t} addrgenmode none up")])  # fmt: skip
    extra = " noprefixroute" if kind.endswith("noprefixroute") else ""
    if kind == "proxy":
        lines = [f"neigh add proxy fe80::1 dev {t}" for t in taps]
    elif kind.startswith("own"):
        lines = []
        for i, t in enumerate(taps):
            gw, block = f"fe80::1:0:0:{i:x}", f"fd00:0:0:{i:x}::/64"
            if kind == "own":
                lines.append(f"address add {gw}/64 dev {t} nodad")
            else:
                lines.append(f"address add {gw}/128 dev {t} nodad noprefixroute")
                lines.append(f"route add fe80::/64 dev {t} metric {1_000_000 - i}")
            lines.append(f"route add {block} dev {t}")
    elif kind.startswith("distinct"):
        lines = [f"address add fe80::{i + 1:x}/64 dev {t} nodad{extra}" for i, t in enumerate(taps)]
    else:
        lines = [f"address add fe80::1/64 dev {t} nodad{extra}" for t in taps]
    return batch(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.environ.get(MARK) == "1":
        print("addresses\t{:.1f}\t{:.1f}".format(*one(args.n, args.one)))
        return 0
    got = unshared(__file__, MARK, args.n, args.runs, list(KINDS))
    print(f"{args.n} taps, {args.runs} runs, medians: wall ms / CPU ms of ip")
    print_medians(got)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
