"""The datapath over IPv6 (issue 24: forwarding v6 at 4000 VMs >= 85 % of the 1-VM rate):
section 4 of bench/suite.py with every VM made by ``up --ipv6`` and the guest sending over
IPv6, through NAT66, to the internet namespace. Two throwaway sandboxes, one VM and BIG VMs;
in each the newest VM's tap becomes a veth into a guest namespace (suite.Datapath, with the
v6 tap's addresses and route), then UDP (the smallest frame: 62 bytes, no payload) and TCP
(iperf3), round-robin over the two, best of the trials.

    sudo .venv/bin/python bench/datapath6.py [--big 4000] [--trials 5] [--seconds 1.5]

Before the trials a ping from each guest to the internet namespace must come back: that
namespace has no route to the VMs' pool, so an answer proves the packets left masqueraded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from suite import (
    INTERNET6,
    TABLE,
    Datapath,
    datapath_fireroute,
    datapath_ratio,
    datapath_trials,
    log,
    prepare_code,
    sh,
    sweep,
)

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(1)
for _ in range(5):  # an echo request (the kernel fills in the checksum), until a reply
    s.sendto(bytes([128, 0, 0, 0, 0x66, 0x72, 0, 1]), (sys.argv[1], 0))
    try:
        while s.recv(1500)[0] != 129:
            pass
        sys.exit(0)
    except (TimeoutError, socket.timeout):
        pass
sys.exit("no echo reply from " + sys.argv[1])
"""


def reached(d: Datapath) -> None:
    """The guest reaches the internet namespace over IPv6 (only NAT66 brings replies back)."""
    sh("ip", "netns", "exec", d.guest, sys.executable, "-c", ECHO, d.far, timeout=30)


def v6_vms(d: Datapath) -> int:
    """How many VMs the sandbox's ip6 table holds (its ``vms`` set's elements)."""
    doc = json.loads(sh("ip", "netns", "exec", d.sb.host, "nft", "-j", "list", "set", "ip6",
                        TABLE, "vms"))  # fmt: skip
    return sum(len(x["set"].get("elem", [])) for x in doc["nftables"] if "set" in x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", type=int, default=4000, help="VMs in the big sandbox")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.5, help="per UDP / TCP trial")
    ap.add_argument("--max-packets", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--rev", help="measure a snapshot of this commit (git archive)")
    args = ap.parse_args()
    if args.seconds < 1 or args.big < 2 or args.trials < 1:
        ap.error("--seconds at least 1 (iperf3 counts whole seconds), --big 2, --trials 1")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench creates network namespaces")
    started = time.time()
    load = Path("/proc/loadavg").read_text().split()[:3]
    try:
        with tempfile.TemporaryDirectory() as tmpd, contextlib.ExitStack() as stack:
            tmp = Path(tmpd)
            code = prepare_code(args.rev, tmp)
            log(f"datapath v6: measuring {code}; building sandboxes of 1 and {args.big} VMs")
            paths = {
                "v6_1": datapath_fireroute(stack, tmp, 1, ipv6=True),
                f"v6_{args.big}": datapath_fireroute(stack, tmp, args.big, ipv6=True),
            }
            for vms, d in zip((1, args.big), paths.values(), strict=True):
                if v6_vms(d) != vms:
                    raise RuntimeError(f"{d.label}: {v6_vms(d)} VMs with IPv6, not {vms}")
                reached(d)
            out = datapath_trials(paths, args.trials, args.seconds, args.max_packets, "v6")
    finally:
        sweep()
    out["ratio"] = datapath_ratio(out["v6_1"], out[f"v6_{args.big}"])
    out["meta"] = {
        "code": code,
        "big": args.big,
        "trials": args.trials,
        "seconds": args.seconds,
        "loadavg_at_start": load,
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "elapsed_s": time.time() - started,
        "far": INTERNET6,
    }
    one, big, r = out["v6_1"], out[f"v6_{args.big}"], out["ratio"]
    print(f"datapath over IPv6 (NAT66), best of {args.trials} (median):")
    for label, x in (("1 VM", one), (f"{args.big} VMs", big)):
        print(
            f"  {label:>10}: UDP {x['udp_kpps']:.1f} kpps ({x['udp_kpps_median']:.1f}), "
            f"TCP {x['tcp_mbit_s']:.0f} Mbit/s ({x['tcp_mbit_s_median']:.0f})"
        )
    print(
        f"  {args.big} vs 1: UDP {r['udp']:.0%} (medians {r['udp_of_medians']:.0%}), "
        f"TCP {r['tcp']:.0%} (medians {r['tcp_of_medians']:.0%}); target UDP >= 85 %"
    )
    print(f"  load average {' '.join(load)} -> {' '.join(out['meta']['loadavg_at_end'])}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
