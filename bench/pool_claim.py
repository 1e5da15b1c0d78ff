"""What a warm-pool claim would cost in the kernel (issue 25's "pre-built networks"), against
making the same CNI attachment cold: the container side's netlink work only, in-process, as
the daemon does it (kernel/nsexec.py), in throwaway namespaces.

    sudo .venv/bin/python bench/pool_claim.py --runs 200

cold:  in the container's namespace: the veth (far end to the host's namespace) and the tap
       made, both set (MAC, tag, up), IPv6 off on both, the two redirects (qdisc + filter).
claim: a ready veth end and tap wait in a holding namespace (their far end in the host's);
       each is moved into the container's namespace, renamed, given its MAC and tag and
       brought up by one RTM_NEWLINK; then IPv6 off on both and the two redirects, which a
       move does not keep (it takes the device down: qdiscs and filters go, and a redirect's
       target leaves with its device), so they are made after it.
Also checks that the redirects do not survive a move (the premise of the claim's shape).
Prints medians and p90 (µs); "claim's moves" is the part of the claim that moves the links.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from fireroute.kernel import nsexec, rtnl, tun  # noqa: E402
from fireroute.kernel.apply import Ran  # noqa: E402
from fireroute.kernel.rtnl import attr, ifinfomsg, u32  # noqa: E402
from fireroute.lab.sandbox import Sandbox  # noqa: E402

IFLA_NET_NS_FD = 28
MAC_E, MAC_H, MAC_T = "0a:01:ac:10:00:02", "0a:00:ac:10:00:02", "0a:02:ac:10:00:02"
TAG = "fireroute:5ca1ab1e:cni-bench"


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def _sysctls() -> None:
    for dev in ("eth0", "tap0"):
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1\n")


def _redirects(nl: rtnl.Rtnl) -> None:
    for src, dst in (("eth0", "tap0"), ("tap0", "eth0")):
        nsexec._qdisc(src, nsexec.RTM_NEWQDISC)(nl)
        nsexec._filter(src, dst)(nl)


def _set(nl: rtnl.Rtnl, index: int, mac: str, extra: bytes = b"") -> None:
    body = ifinfomsg(index, rtnl.IFF_UP, rtnl.IFF_UP) + extra + attr(1, _mac(mac))
    nl.request(rtnl.RTM_NEWLINK, 0, body + attr(rtnl.IFLA_IFALIAS, TAG.encode()))


def cold(home: str, host_end: str) -> Ran:
    nl = rtnl.Rtnl()
    try:
        fd = os.open(home, os.O_RDONLY)
        far = ifinfomsg(0) + nsexec._name_attr(host_end) + attr(1, _mac(MAC_H))
        far += attr(IFLA_NET_NS_FD, u32(fd))
        info = attr(1, b"veth") + attr(2, attr(1, far))
        body = ifinfomsg(0) + nsexec._name_attr("eth0") + attr(1, _mac(MAC_E))
        nl.request(rtnl.RTM_NEWLINK, 0x600, body + attr(18, info))
        os.close(fd)
        tun.add_tap("tap0", 0)
        _set(nl, rtnl.ifindex("eth0"), MAC_E)
        _set(nl, rtnl.ifindex("tap0"), MAC_T)
        _sysctls()
        _redirects(nl)
    finally:
        nl.close()
    return Ran({})


def prepare(home: str, host_end: str, n: int) -> Ran:
    """In the holding namespace: pool member ``n``, a veth end and a tap, both down."""
    nl = rtnl.Rtnl()
    try:
        fd = os.open(home, os.O_RDONLY)
        far = ifinfomsg(0) + nsexec._name_attr(host_end) + attr(IFLA_NET_NS_FD, u32(fd))
        info = attr(1, b"veth") + attr(2, attr(1, far))
        nl.request(
            rtnl.RTM_NEWLINK, 0x600, ifinfomsg(0) + nsexec._name_attr(f"pe{n}") + attr(18, info)
        )
        os.close(fd)
        tun.add_tap(f"pt{n}", 0)
    finally:
        nl.close()
    return Ran({})


def move(container: str, n: int) -> Ran:
    """From the holding namespace: both members into the container's, renamed, set, up."""
    nl = rtnl.Rtnl()
    try:
        fd = os.open(container, os.O_RDONLY)
        for old, new, mac in ((f"pe{n}", "eth0", MAC_E), (f"pt{n}", "tap0", MAC_T)):
            extra = attr(IFLA_NET_NS_FD, u32(fd)) + nsexec._name_attr(new)
            _set(nl, rtnl.ifindex(old), mac, extra)
        os.close(fd)
    finally:
        nl.close()
    return Ran({})


def finish() -> Ran:
    """In the container's namespace after the move: IPv6 off, the redirects."""
    nl = rtnl.Rtnl()
    try:
        _sysctls()
        _redirects(nl)
    finally:
        nl.close()
    return Ran({})


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {xs[len(xs) // 2] * 1e6:.0f} µs, p90 {xs[len(xs) * 9 // 10] * 1e6:.0f} µs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/pool_claim.py: run as root (it creates network namespaces)")
    with Sandbox(prefix="frpc") as sb:
        hold, box = f"{sb.host}-hold", f"{sb.host}-box"
        sh("ip", "netns", "add", hold)
        sh("ip", "netns", "add", box)
        try:
            home, hold_p = f"/var/run/netns/{sb.host}", f"/var/run/netns/{hold}"
            box_p = f"/var/run/netns/{box}"
            # the premise: a move drops the redirects
            nsexec.in_namespace(box_p, lambda: cold(home, "frh-probe"))
            sh("ip", "-n", box, "link", "set", "tap0", "netns", hold)
            kept = sh("ip", "netns", "exec", hold, "tc", "qdisc", "show", "dev", "tap0")
            print("a moved tap's qdiscs:", kept.strip() or "(none)")
            sh("ip", "-n", hold, "link", "del", "tap0")
            sh("ip", "-n", box, "link", "del", "eth0")
            times: dict[str, list[float]] = {"cold": [], "claim": [], "claim's moves": []}
            for i in range(args.runs):
                t = time.perf_counter()
                nsexec.in_namespace(box_p, lambda i=i: cold(home, f"frh{i}"))
                times["cold"].append(time.perf_counter() - t)
                sh("ip", "-n", box, "link", "del", "eth0")
                sh("ip", "-n", box, "link", "del", "tap0")
                nsexec.in_namespace(hold_p, lambda i=i: prepare(home, f"frp{i}", i))
                t = time.perf_counter()
                nsexec.in_namespace(hold_p, lambda i=i: move(box_p, i))
                moved = time.perf_counter()
                nsexec.in_namespace(box_p, finish)
                times["claim"].append(time.perf_counter() - t)
                times["claim's moves"].append(moved - t)
                sh("ip", "-n", box, "link", "del", "eth0")
                sh("ip", "-n", box, "link", "del", "tap0")
        finally:
            for ns in (hold, box):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for k, v in times.items():
        print(f"{k}: {stats(v)} ({len(v)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
