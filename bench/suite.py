"""fireroute at scale: the whole benchmark suite, one command, everything inside throwaway
network namespaces (the machine's own namespace is never touched; traffic only flows between
namespaces this script creates, bounded in time and packet count).

    sudo .venv/bin/python bench/suite.py            # full run, ~10-15 min on 2 vCPU
    sudo .venv/bin/python bench/suite.py --quick    # shorter: N up to 1000, fewer runs

Sections (all measured side by side in one run; ratios are what hold on a noisy machine):
  1. one VM, cold process: ``fireroute up``/``down`` vs the guide's five commands as a shell
     script (bench_nat.py) and vs Debian's CNI ``ptp`` plugin (host-local IPAM, ipMasq) ADD/DEL;
  2. batch: N VMs up / all down, ``up --count N`` / ``down --all`` vs the guide's loop; time
     and peak RSS (GNU time %M);
  3. churn: one VM up + down, fresh processes, with BIG VMs up vs with 20 (interleaved);
  4. datapath: 64-byte UDP forwarding rate and TCP throughput guest -> host -> internet, with
     1 and BIG VMs configured, fireroute's nft sets vs the guide's per-VM rules (the same over
     IPv6, every VM with ``--ipv6``: bench/datapath6.py);
  5. start-up: ``fireroute --version`` and ``-X importtime`` of ``fireroute up --help``.

Writes bench/results/suite-<stamp>.{json,csv,md}; bench/RESULTS.md is the committed summary.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
import bench_nat  # noqa: E402
import floor  # noqa: E402
from bench_nat import GUIDE_SETUP, Bench, guide_down, guide_up, med, p95  # noqa: E402

from fireroute.lab.sandbox import INTERNET_IP, Sandbox  # noqa: E402

PREFIX = "frsuite"
CNI_DIR = Path("/usr/lib/cni")
GNU_TIME = "/usr/bin/time"
TABLE = "fr"
MIB = 1024.0


# -- helpers ------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*argv: str, stdin: str | None = None, timeout: float = 600, env: dict | None = None) -> str:
    p = subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def fr_bin() -> str:
    """The fireroute launcher every measurement runs (bench_nat.FIREROUTE, which --rev
    replaces with a snapshot's)."""
    return bench_nat.FIREROUTE


LAUNCHER = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
sys.path.insert(0, {src!r})
from fireroute.cli.main import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def prepare_code(rev: str | None, tmp: Path) -> dict:
    """Fresh bytecode for what is measured, without writing into src/: the environment may set
    PYTHONDONTWRITEBYTECODE (then a stale __pycache__ means every cold run recompiles), so
    children get PYTHONPYCACHEPREFIX=<tmp> and it is filled by compileall first. With ``rev``,
    a snapshot of that commit (git archive) is measured through its own scripts/fireroute (the
    launcher install.sh installs), so concurrent edits of the working tree cannot change the
    figures."""
    repo = HERE.parent
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    src = repo / "src"
    info = {"rev": rev or "working tree"}
    if rev:
        commit = sh("git", "-C", str(repo), "rev-parse", rev).strip()
        snap = tmp / "snapshot"
        snap.mkdir()
        paths = ["src", "scripts"]
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", commit, *paths], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
        src = snap / "src"
        launcher = snap / "scripts" / "fireroute"
        if not launcher.exists():  # older revisions: what pip's console script was
            launcher = snap / "fireroute"
            launcher.write_text(LAUNCHER.format(python=sys.executable, src=str(src)))
            launcher.chmod(0o755)
        bench_nat.FIREROUTE = str(launcher)
        info["commit"] = commit
    else:
        info["commit"] = sh("git", "-C", str(repo), "rev-parse", "HEAD").strip()
        info["dirty_src"] = bool(sh("git", "-C", str(repo), "status", "--porcelain", "src"))
    sh(sys.executable, "-m", "compileall", "-q", str(src / "fireroute"), env=dict(os.environ))
    info["launcher"] = fr_bin()
    return info


class Netns:
    """One extra namespace (a CNI sandbox or a guest side), always deleted on exit."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Netns:
        sh("ip", "netns", "add", self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


MADE: list[str] = []
"""the sandboxes this process made (their host namespaces): every namespace of a run is named
after one, and only those are swept (another run of the suite may be under way beside it)"""


def sweep() -> None:
    """Belt and braces: every namespace this process made is gone, whatever happened."""
    for n in sh("ip", "netns", "list").split():
        if any(n == h or n.startswith(h + "-") for h in MADE):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def fresh_sandbox(stack: contextlib.ExitStack, tmp: Path, tag: str) -> tuple[Sandbox, Bench]:
    sb = stack.enter_context(Sandbox(prefix=PREFIX))
    MADE.append(sb.host)
    state = tmp / f"state-{tag}-{secrets.token_hex(2)}.db"
    sb.state = state
    return sb, Bench(sb, state)


def timed_rss(b: Bench, argv: list[str], stdin: str | None = None) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB, GNU time %M: the largest single process among the
    command and the children it waited for)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as f:
        dt = b.timed([GNU_TIME, "-f", "%M", "-o", f.name, *argv], stdin)
        kib = int(f.read().strip().splitlines()[-1])
    return dt, kib / MIB


def ms(xs: list[float]) -> dict[str, float]:
    return {"median_ms": med(xs) * 1e3, "p95_ms": p95(xs) * 1e3, "n": len(xs)}


# -- 1. single VM, cold process -----------------------------------------------------------------
CNI_CONF = {
    "cniVersion": "1.0.0",
    "name": "frbench",
    "type": "ptp",
    "ipMasq": True,
    "ipam": {"type": "host-local", "subnet": "172.18.0.0/16"},
}


def cni_env(command: str, netns: str, container: str) -> dict[str, str]:
    """The environment a runtime gives a CNI plugin (interface eth0, Debian's plugin dir)."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": f"/var/run/netns/{netns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(CNI_DIR),
    }


def cni(b: Bench, command: str, netns: str, container: str, conf: str) -> float:
    """One CNI plugin call as a runtime makes it: CNI_* in the environment, config on stdin,
    run in the host namespace."""
    saved, b.env = b.env, cni_env(command, netns, container)
    try:
        return b.timed([str(CNI_DIR / "ptp")], conf)
    finally:
        b.env = saved


def bench_single(stack: contextlib.ExitStack, tmp: Path, runs: int) -> dict:
    log(f"1. single VM, cold process, {runs} runs each (fireroute, guide script, CNI ptp)")
    sb, b = fresh_sandbox(stack, tmp, "single")
    b.bash(GUIDE_SETUP)
    conf = json.dumps({**CNI_CONF, "ipam": {**CNI_CONF["ipam"], "dataDir": str(tmp / "cni-ipam")}})
    t: dict[str, list[float]] = {k: [] for k in ("fr_up", "fr_down", "g_up", "g_down")}
    t.update({"cni_add": [], "cni_del": [], "floor_up": [], "floor_down": []})
    b.bash(f"nft -f - <<'EOF'\n{floor.SETUP}EOF\n")
    floor_cmd = ["/usr/bin/python3", "-S", str(HERE / "floor.py")]
    floor_state = str(tmp / "floor.db")
    for i in range(runs):
        # interleaved, so drift on a shared machine hits all three alike
        t["fr_up"].append(b.fr("up", "one", "--table", TABLE))
        t["fr_down"].append(b.fr("down", "one"))
        t["g_up"].append(b.bash(guide_up(0)))
        t["g_down"].append(b.bash(guide_down(0)))
        t["floor_up"].append(b.timed([*floor_cmd, "up", floor_state]))
        t["floor_down"].append(b.timed([*floor_cmd, "down", floor_state]))
        with Netns(f"{sb.host}-c{i}") as ns:  # a fresh sandbox netns per run, as a runtime has
            t["cni_add"].append(cni(b, "ADD", ns.name, f"bench{i}", conf))
            t["cni_del"].append(cni(b, "DEL", ns.name, f"bench{i}", conf))
    return {k: ms(v) for k, v in t.items()}


# -- 2. batch + 3. churn ------------------------------------------------------------------------
def churn_cycle(b: Bench) -> tuple[float, float]:
    return b.fr("up", "churn", "--table", TABLE), b.fr("down", "churn")


def bench_batch(
    stack: contextlib.ExitStack,
    tmp: Path,
    sizes: list[int],
    big: int,
    churn_runs: int,
    guide_full_down_max: int,
    guide_down_sample: int,
) -> tuple[dict, dict]:
    batch: dict[str, dict] = {}
    churn: dict = {}
    for n in sizes:
        log(f"2. batch N={n}: fireroute up --count / down --all")
        with contextlib.ExitStack() as st:
            _, b = fresh_sandbox(st, tmp, f"fr{n}")
            up_s, up_rss = timed_rss(
                b, [fr_bin(), "up", "--count", str(n), "--prefix", "v", "--table", TABLE]
            )
            if n == big:
                churn = bench_churn(st, tmp, b, big, churn_runs)
            down_s, down_rss = timed_rss(b, [fr_bin(), "down", "--all"])
        row = {
            "fireroute_up_s": up_s,
            "fireroute_up_rss_mib": up_rss,
            "fireroute_down_s": down_s,
            "fireroute_down_rss_mib": down_rss,
        }
        log(f"2. batch N={n}: the guide's commands looped (one bash script)")
        with contextlib.ExitStack() as st:
            _, b = fresh_sandbox(st, tmp, f"g{n}")
            b.bash(GUIDE_SETUP)
            g_up, g_rss = timed_rss(b, ["bash", "-e", "-s"], "".join(guide_up(i) for i in range(n)))
            k = n if n <= guide_full_down_max else min(guide_down_sample, n)
            if k < n:
                log(f"   guide down at N={n}: timing {k} deletions from the {n}-VM ruleset")
            # delete the newest k VMs (all n when k == n); each deletion lists the chains
            g_down = b.bash("".join(guide_down(i) for i in range(n - 1, n - 1 - k, -1)))
        row.update(
            {
                "guide_up_s": g_up,
                "guide_up_rss_mib": g_rss,
                "guide_down_measured_vms": k,
                "guide_down_measured_s": g_down,
                "guide_down_per_vm_ms": g_down / k * 1e3,
                "guide_down_s": g_down if k == n else None,
            }
        )
        batch[str(n)] = row
    return batch, churn


def bench_churn(stack: contextlib.ExitStack, tmp: Path, b_big: Bench, big: int, runs: int) -> dict:
    """One more VM up and down (fresh processes) with ``big`` VMs up vs with 20, interleaved
    cycle by cycle in two sandboxes so machine noise hits both alike."""
    log(f"3. churn: {runs} up+down cycles at 20 and at {big} VMs, interleaved")
    _, b20 = fresh_sandbox(stack, tmp, "churn20")
    b20.fr("up", "--count", "20", "--prefix", "v", "--table", TABLE)
    r: dict[str, list[float]] = {k: [] for k in ("up20", "down20", "upbig", "downbig")}
    for i in range(runs):
        order = [("20", b20), ("big", b_big)] if i % 2 == 0 else [("big", b_big), ("20", b20)]
        for tag, b in order:
            u, d = churn_cycle(b)
            r[f"up{tag}"].append(u)
            r[f"down{tag}"].append(d)
    cyc20 = [u + d for u, d in zip(r["up20"], r["down20"], strict=True)]
    cycbig = [u + d for u, d in zip(r["upbig"], r["downbig"], strict=True)]
    return {
        "big": big,
        "runs": runs,
        "at_20": {"up": ms(r["up20"]), "down": ms(r["down20"]), "cycle": ms(cyc20)},
        "at_big": {"up": ms(r["upbig"]), "down": ms(r["downbig"]), "cycle": ms(cycbig)},
        "ratio_cycle": med(cycbig) / med(cyc20),
        "ratio_up": med(r["upbig"]) / med(r["up20"]),
        "ratio_down": med(r["downbig"]) / med(r["down20"]),
    }


# -- 4. datapath --------------------------------------------------------------------------------
UDP_PORT = 9000
SENDER = r"""
import socket, sys, time
n, limit = int(sys.argv[1]), float(sys.argv[2])
v6 = ":" in sys.argv[3]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[3], int(sys.argv[4])))
# the smallest frame: 14 + 20 + 8 + 18 = 60 bytes on the wire (64 w/ FCS); IPv6, no payload:
# 14 + 40 + 8 = 62 (66 w/ FCS)
send, payload = s.send, b"x" * (0 if v6 else 18)
sent = err = 0
t0 = time.perf_counter()
deadline = t0 + limit
while sent < n:
    for _ in range(500):
        try:
            send(payload)
        except OSError:
            err += 1
        sent += 1
    if time.perf_counter() >= deadline:
        break
print(sent, err, time.perf_counter() - t0)
"""
RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.5)
print("ready", flush=True)
count, per_sec, first, end = 0, {}, None, time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        s.recv(64)
    except (TimeoutError, socket.timeout):
        if first is not None:
            break
        continue
    now = time.monotonic()
    first = first if first is not None else now
    count += 1
    sec = int(now - first)
    per_sec[sec] = per_sec.get(sec, 0) + 1
print(count, " ".join(str(per_sec[k]) for k in sorted(per_sec)))
"""


class Datapath:
    """A sandbox whose measured "VM" is a veth pair: the host end carries the tap's name and
    address (so every nft element / rule written for the tap matches it), the other end sits in
    a guest namespace with the guest IP and a default route via the tap IP. ``far``: the
    internet namespace's address the guest sends to (an IPv6 one measures the IPv6 path)."""

    def __init__(
        self, label: str, sb: Sandbox, b: Bench, guest: str, far: str = INTERNET_IP
    ) -> None:
        self.label, self.sb, self.b, self.guest, self.far = label, sb, b, guest, far

    def swap_tap_for_veth(
        self,
        tap: str,
        tap_ip: str,
        guest_ip: str,
        prefix: int = 30,
        existing: bool = True,
        six: dict | None = None,
    ) -> None:
        """``six``: the VM's ``ipv6`` record (``show --format json``): the host end is then
        given what fireroute gives a v6 tap (no kernel link-local address, the gateway
        address without DAD, the route to the VM's block) and the guest end its address and
        a default route via the gateway."""
        h, g = self.sb.host, self.guest
        if existing:
            sh("ip", "-n", h, "link", "del", tap)
        sh("ip", "-n", h, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", g)
        sh("ip", "-n", h, "addr", "add", f"{tap_ip}/{prefix}", "dev", tap)
        if six:
            for ns, dev, key in ((h, tap, "addr_gen_mode=1"), (g, "eth0", "accept_dad=0")):
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.{key}")
            sh("ip", "-n", h, "addr", "add", f"{six['gateway']}/64", "dev", tap, "nodad")
        sh("ip", "-n", h, "link", "set", tap, "up")
        sh("ip", "-n", g, "addr", "add", f"{guest_ip}/{prefix}", "dev", "eth0")
        sh("ip", "-n", g, "link", "set", "eth0", "up")
        sh("ip", "-n", g, "link", "set", "lo", "up")
        sh("ip", "-n", g, "route", "add", "default", "via", tap_ip)
        if six:
            sh("ip", "-n", h, "-6", "route", "add", six["block"], "dev", tap)
            sh("ip", "-n", g, "-6", "addr", "add", f"{six['address']}/{six['prefix']}",
               "dev", "eth0", "nodad")  # fmt: skip
            sh("ip", "-n", g, "-6", "route", "add", "default", "via", six["gateway"],
               "dev", "eth0")  # fmt: skip

    def rx_packets(self) -> int:
        out = sh("ip", "-n", self.sb.internet, "-j", "-s", "link", "show", "down0")
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])

    def udp(self, count: int, seconds: float) -> dict:
        recv = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.sb.internet,
                "taskset",
                "-c",
                "1",
                sys.executable,
                "-c",
                RECEIVER,
                self.far,
                str(UDP_PORT),
                str(seconds + 5),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert recv.stdout is not None
            if recv.stdout.readline().strip() != "ready":
                raise RuntimeError("UDP receiver did not start")
            before = self.rx_packets()
            out = sh(
                "ip",
                "netns",
                "exec",
                self.guest,
                "taskset",
                "-c",
                "0",
                sys.executable,
                "-c",
                SENDER,
                str(count),
                str(seconds),
                self.far,
                str(UDP_PORT),
                timeout=seconds + 30,
            )
            after = self.rx_packets()
            rcv_out, _ = recv.communicate(timeout=seconds + 10)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        sent, err, elapsed = out.split()
        fwd = after - before
        rcvd = rcv_out.split()
        return {
            "sent": int(sent),
            "send_errors": int(err),
            "elapsed_s": float(elapsed),
            "forwarded": fwd,
            "kpps": fwd / float(elapsed) / 1e3,
            "received_by_app": int(rcvd[0]) if rcvd else 0,
            "receiver_pps": [int(x) for x in rcvd[1:]],
        }

    def tcp(self, seconds: float) -> dict:
        srv = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.sb.internet,
                "taskset",
                "-c",
                "1",
                "iperf3",
                "-s",
                "-1",
                "-B",
                self.far,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        listen = f"[{self.far}]" if ":" in self.far else self.far
        try:
            for _ in range(50):
                if f"{listen}:5201" in sh("ip", "netns", "exec", self.sb.internet, "ss", "-ltn"):
                    break
                time.sleep(0.05)
            out = sh(
                "ip",
                "netns",
                "exec",
                self.guest,
                "taskset",
                "-c",
                "0",
                "iperf3",
                "-c",
                self.far,
                "-t",
                str(seconds),
                "-J",
                timeout=seconds + 30,
            )
            srv.wait(timeout=10)
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()
        end = json.loads(out)["end"]
        return {
            "mbit_s": end["sum_received"]["bits_per_second"] / 1e6,
            "retransmits": end["sum_sent"].get("retransmits", 0),
        }


def datapath_fireroute(
    stack: contextlib.ExitStack, tmp: Path, vms: int, ipv6: bool = False
) -> Datapath:
    """``ipv6``: the sandbox's uplink speaks IPv6 too (:func:`sandbox6`), every VM is made
    with ``up --ipv6`` and the guest sends to the internet namespace's IPv6 address."""
    sb, b = fresh_sandbox(stack, tmp, f"dpfr{vms}")
    guest = stack.enter_context(Netns(f"{sb.host}-g")).name
    six = ["--ipv6"] if ipv6 else []
    if ipv6:
        sandbox6(sb)
    if vms > 1:  # the other VMs: normal fireroute taps (the measured one is the newest)
        b.fr("up", "--count", str(vms - 1), "--prefix", "v", "--table", TABLE, *six)
    b.fr("up", "dp", "--table", TABLE, *six)
    show = ["ip", "netns", "exec", sb.host, fr_bin(), "show", "dp", "--format", "json"]
    vm = json.loads(sh(*show, env=b.env))
    far = INTERNET6 if ipv6 else INTERNET_IP
    d = Datapath(f"fireroute nft{' v6' if ipv6 else ''}, {vms} VM", sb, b, guest, far)
    d.swap_tap_for_veth(vm["tap"], vm["tap_ip"], vm["guest_ip"], vm["prefix"], six=vm.get("ipv6"))
    return d


UPLINK6, INTERNET6 = "2001:db8:ffff::2", "2001:db8:ffff::1"
"""the sandbox uplink's IPv6 address and the internet namespace's (fireroute.lab.sandbox
gives them none): no route back to the VMs' pool, so replies come only through NAT66"""


def sandbox6(sb: Sandbox, timeout: float = 5.0) -> None:
    """The sandbox's uplink and internet side with IPv6 addresses and the host's default
    route; returns once the uplink's own link-local address has left DAD (the kernel sends no
    neighbour solicitation from a tentative one), as on a host whose uplink came up long ago."""
    sh("ip", "-n", sb.host, "-6", "addr", "add", f"{UPLINK6}/64", "dev", "up0", "nodad")
    sh("ip", "-n", sb.internet, "-6", "addr", "add", f"{INTERNET6}/64", "dev", "down0", "nodad")
    sh("ip", "-n", sb.host, "-6", "route", "add", "default", "via", INTERNET6, "dev", "up0")
    deadline = time.monotonic() + timeout
    while True:
        doc = json.loads(sh("ip", "-n", sb.host, "-j", "-6", "addr", "show", "dev", "up0"))
        infos = [a for d in doc for a in d.get("addr_info", []) if a.get("scope") == "link"]
        if infos and not any(a.get("tentative") for a in infos):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"up0's link-local address still tentative: {doc}")
        time.sleep(0.05)


def datapath_guide(stack: contextlib.ExitStack, tmp: Path, vms: int) -> Datapath:
    """The guide's ruleset: its table/chains and, per VM, its tap and its two ``nft add rule``
    lines (exactly guide_up's), loaded with one ``ip -batch`` and one ``nft -f`` instead of 5
    processes per VM (same kernel state, minutes faster). The measured VM is the last one added
    (the newest VM: its ACCEPT rule is the last of the forward chain)."""
    sb, b = fresh_sandbox(stack, tmp, f"dpg{vms}")
    guest = stack.enter_context(Netns(f"{sb.host}-g")).name
    b.bash(GUIDE_SETUP)
    ip_lines, nft_lines = [], []
    for i in range(vms):
        for line in guide_up(i).splitlines():
            if line.startswith("ip ") and i < vms - 1:
                ip_lines.append(line[3:])
            elif line.startswith("nft "):
                nft_lines.append(line[4:])
    if ip_lines:
        b.timed(["ip", "-batch", "-"], "\n".join(ip_lines) + "\n")
    b.timed(["nft", "-f", "-"], "\n".join(nft_lines) + "\n")
    i, o = vms - 1, 4 * (vms - 1)
    d = Datapath(f"guide per-VM rules, {vms} VM", sb, b, guest)
    d.swap_tap_for_veth(
        f"tap{i}",
        f"172.17.{(o + 1) // 256}.{(o + 1) % 256}",
        f"172.17.{(o + 2) // 256}.{(o + 2) % 256}",
        existing=False,
    )
    return d


def bench_datapath(
    stack: contextlib.ExitStack, tmp: Path, big: int, trials: int, seconds: float, count: int
) -> dict:
    log(f"4. datapath: building 4 sandboxes (fireroute/guide x 1/{big} VMs)")
    paths = {
        "fireroute_1": datapath_fireroute(stack, tmp, 1),
        f"fireroute_{big}": datapath_fireroute(stack, tmp, big),
        "guide_1": datapath_guide(stack, tmp, 1),
        f"guide_{big}": datapath_guide(stack, tmp, big),
    }
    out = datapath_trials(paths, trials, seconds, count, "4. datapath")
    for rs in ("fireroute", "guide"):
        out[f"{rs}_ratio"] = datapath_ratio(out[f"{rs}_1"], out[f"{rs}_{big}"])
    return out


def datapath_trials(
    paths: dict[str, Datapath], trials: int, seconds: float, count: int, section: str
) -> dict[str, dict]:
    """UDP and TCP over each path, ``trials`` rounds (round-robin over the paths, so drift
    hits all alike); per path the best trial and the median."""
    res: dict[str, dict] = {k: {"udp": [], "tcp": []} for k in paths}
    for t in range(trials):
        for key, d in paths.items():
            log(f"{section} trial {t + 1}/{trials}: {d.label}")
            res[key]["udp"].append(d.udp(count, seconds))
            res[key]["tcp"].append(d.tcp(seconds))
    return {
        key: {
            "udp_kpps": max(x["kpps"] for x in r["udp"]),
            "tcp_mbit_s": max(x["mbit_s"] for x in r["tcp"]),
            "udp_kpps_median": med([x["kpps"] for x in r["udp"]]),
            "tcp_mbit_s_median": med([x["mbit_s"] for x in r["tcp"]]),
            "trials": r,
        }
        for key, r in res.items()
    }


def datapath_ratio(a: dict, z: dict) -> dict[str, float]:
    """Path ``z`` against path ``a``. The primary figure: best of the trials (the path's
    capacity; other tenants of a shared machine only ever lower a trial), the ratio of
    medians kept alongside."""
    return {
        "udp": z["udp_kpps"] / a["udp_kpps"],
        "tcp": z["tcp_mbit_s"] / a["tcp_mbit_s"],
        "udp_of_medians": z["udp_kpps_median"] / a["udp_kpps_median"],
        "tcp_of_medians": z["tcp_mbit_s_median"] / a["tcp_mbit_s_median"],
    }


# -- 5. start-up --------------------------------------------------------------------------------
def bench_startup(stack: contextlib.ExitStack, tmp: Path, runs: int) -> dict:
    log(f"5. start-up: fireroute --version x{runs}, importtime of one up (and down)")

    def wall(argv: list[str]) -> float:
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        return time.perf_counter() - t

    interpreter = Path(fr_bin()).read_text().splitlines()[0][2:].split()  # the shebang
    version, floor = [], []
    for _ in range(runs):
        version.append(wall([fr_bin(), "--version"]))
        floor.append(wall([*interpreter, "-c", "pass"]))
    sb, b = fresh_sandbox(stack, tmp, "startup")
    p = subprocess.run(
        ["ip", "netns", "exec", sb.host, *interpreter, "-X", "importtime", fr_bin()]
        + ["up", "imports", "--table", TABLE],
        capture_output=True,
        text=True,
        check=True,
        env=b.env,
    )
    b.fr("down", "imports")
    mods = []
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            mods.append(
                {
                    "module": m.group(4),
                    "self_ms": int(m.group(1)) / 1e3,
                    "cumulative_ms": int(m.group(2)) / 1e3,
                    "depth": len(m.group(3)) // 2,
                }
            )
    top = sorted((m for m in mods if m["depth"] == 0), key=lambda m: -m["cumulative_ms"])
    return {
        "version": ms(version),
        "python_c_pass": ms(floor),
        "import_total_ms": sum(m["self_ms"] for m in mods),
        "top_level_imports": top[:12],
        "top_self": sorted(mods, key=lambda m: -m["self_ms"])[:8],
        "modules": len(mods),
    }


# -- report -------------------------------------------------------------------------------------
def rows_for(r: dict, big: int, quick: bool) -> list[dict]:
    """Flat rows: section, measure, fireroute, the other, ratio other/fireroute, target."""
    rows: list[dict] = []

    def add(sec, measure, fr, other_name, other, unit, target="", ok=None):  # noqa: ANN001
        ratio = other / fr if (fr and other is not None) else None
        status = "" if ok is None else ("PASS" if ok else "FAIL")
        rows.append(
            {
                "section": sec,
                "measure": measure,
                "unit": unit,
                "fireroute": fr,
                "other": other_name,
                "other_value": other,
                "other/fireroute": ratio,
                "target": target,
                "status": status,
            }
        )

    s = r.get("single")
    if s:
        fu, fd = s["fr_up"], s["fr_down"]
        for stat in ("median_ms", "p95_ms"):
            add("1 single", f"up {stat[:-3]}", fu[stat], "guide script", s["g_up"][stat], "ms")
            add("1 single", f"up {stat[:-3]}", fu[stat], "CNI ptp ADD", s["cni_add"][stat], "ms")
            add("1 single", f"down {stat[:-3]}", fd[stat], "guide script", s["g_down"][stat], "ms")
            add("1 single", f"down {stat[:-3]}", fd[stat], "CNI ptp DEL", s["cni_del"][stat], "ms")
            if "floor_up" in s:
                add(
                    "1 single",
                    f"up {stat[:-3]}",
                    fu[stat],
                    "python floor",
                    s["floor_up"][stat],
                    "ms",
                )
                add(
                    "1 single",
                    f"down {stat[:-3]}",
                    fd[stat],
                    "python floor",
                    s["floor_down"][stat],
                    "ms",
                )
        add(
            "1 single",
            "up median vs 100 ms",
            fu["median_ms"],
            "target",
            100.0,
            "ms",
            "<= 100 ms",
            fu["median_ms"] <= 100,
        )
        add(
            "1 single",
            "up median vs CNI ptp ADD",
            fu["median_ms"],
            "CNI ptp ADD",
            s["cni_add"]["median_ms"],
            "ms",
            "<= CNI ADD",
            fu["median_ms"] <= s["cni_add"]["median_ms"],
        )
    for n, row in r.get("batch", {}).items():
        n = int(n)
        add("2 batch", f"{n} VMs up", row["fireroute_up_s"], "guide loop", row["guide_up_s"], "s")
        if row["guide_down_s"] is not None:
            add(
                "2 batch",
                f"{n} VMs down",
                row["fireroute_down_s"],
                "guide loop",
                row["guide_down_s"],
                "s",
            )
        k = row["guide_down_measured_vms"]
        add(
            "2 batch",
            f"down per VM at {n} VMs",
            row["fireroute_down_s"] / n * 1e3,
            f"guide ({k} of {n} deleted)",
            row["guide_down_per_vm_ms"],
            "ms",
        )
        add(
            "2 batch",
            f"{n} VMs up peak RSS",
            row["fireroute_up_rss_mib"],
            "guide (bash+tools)",
            row["guide_up_rss_mib"],
            "MiB",
        )
        add("2 batch", f"{n} VMs down peak RSS", row["fireroute_down_rss_mib"], "", None, "MiB")
        if n == 4000:
            add(
                "2 batch",
                "4000 up vs 6 s",
                row["fireroute_up_s"],
                "target",
                6.0,
                "s",
                "<= 6 s",
                row["fireroute_up_s"] <= 6,
            )
            add(
                "2 batch",
                "4000 down vs 3 s",
                row["fireroute_down_s"],
                "target",
                3.0,
                "s",
                "<= 3 s",
                row["fireroute_down_s"] <= 3,
            )
            rss = max(row["fireroute_up_rss_mib"], row["fireroute_down_rss_mib"])
            add(
                "2 batch",
                "4000 peak RSS vs 200 MiB",
                rss,
                "target",
                200.0,
                "MiB",
                "< 200 MiB",
                rss < 200,
            )
    c = r.get("churn")
    if c:
        for part in ("up", "down", "cycle"):
            add(
                "3 churn",
                f"{part} median, {big} vs 20 VMs",
                c["at_20"][part]["median_ms"],
                f"at {big} VMs",
                c["at_big"][part]["median_ms"],
                "ms",
                "<= 1.2x" if part == "cycle" else "",
                (c["ratio_cycle"] <= 1.2) if part == "cycle" and big >= 4000 else None,
            )
    d = r.get("datapath")
    if d:
        for rs in ("fireroute", "guide"):
            for kind, key, unit in (("udp", "udp_kpps", "kpps"), ("tcp", "tcp_mbit_s", "Mbit/s")):
                ratio = d[f"{rs}_ratio"][kind]
                target_ok = (ratio >= 0.85) if rs == "fireroute" and big >= 4000 else None
                add(
                    "4 datapath",
                    f"{rs} {kind.upper()} 1 vs {big} VMs (best)",
                    d[f"{rs}_1"][key],
                    f"{rs} at {big} VMs",
                    d[f"{rs}_{big}"][key],
                    unit,
                    ">= 0.85x" if rs == "fireroute" else "",
                    target_ok,
                )
                add(
                    "4 datapath",
                    f"{rs} {kind.upper()} 1 vs {big} VMs (median)",
                    d[f"{rs}_1"][f"{key}_median"],
                    f"{rs} at {big} VMs",
                    d[f"{rs}_{big}"][f"{key}_median"],
                    unit,
                )
        for kind, key, unit in (("udp", "udp_kpps", "kpps"), ("tcp", "tcp_mbit_s", "Mbit/s")):
            add(
                "4 datapath",
                f"{kind.upper()} at {big} VMs, guide vs fireroute",
                d[f"fireroute_{big}"][key],
                "guide",
                d[f"guide_{big}"][key],
                unit,
            )
    st = r.get("startup")
    if st:
        add(
            "5 start-up",
            "fireroute --version median",
            st["version"]["median_ms"],
            "its python, -c pass",
            st["python_c_pass"]["median_ms"],
            "ms",
        )
    if quick:
        for row in rows:
            if row["status"] and ("4000" in row["measure"] or row["section"] in ("3 churn",)):
                row["status"] += " (quick: not at 4000)"
    return rows


def fmt(x: object) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def table_md(rows: list[dict]) -> str:
    cols = [
        "section",
        "measure",
        "unit",
        "fireroute",
        "other",
        "other_value",
        "other/fireroute",
        "target",
        "status",
    ]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return "\n".join(out) + "\n"


def print_report(r: dict, rows: list[dict]) -> str:
    lines = []
    section = None
    for row in rows:
        if row["section"] != section:
            section = row["section"]
            lines.append(f"\n== {section} ==")
            lines.append(
                f"{'measure':42} {'unit':>6} {'fireroute':>10}  {'other':28} "
                f"{'value':>10} {'other/fr':>9}  target"
            )
        ratio = row["other/fireroute"]
        lines.append(
            f"{row['measure']:42} {row['unit']:>6} {fmt(row['fireroute']):>10}  "
            f"{row['other']:28} {fmt(row['other_value']):>10} "
            f"{(f'{ratio:.2f}x' if ratio is not None else '-'):>9}  "
            f"{row['target']} {row['status']}"
        )
    st = r.get("startup")
    if st:
        lines.append(
            f"\nimporttime of one `fireroute up` (first VM): {st['modules']} modules, "
            f"{st['import_total_ms']:.1f} ms in imports; top-level by cumulative:"
        )
        for m in st["top_level_imports"][:10]:
            lines.append(f"  {m['cumulative_ms']:7.2f} ms  {m['module']}")
    text = "\n".join(lines) + "\n"
    print(text)
    return text


# -- main ---------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N up to 1000, fewer runs (~3 min)")
    ap.add_argument("--only", help="comma list of sections: single,batch,datapath,startup")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument(
        "--rev",
        help="measure a snapshot of this commit (git archive) instead of the working tree",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the suite creates network namespaces")
    for tool in ("iperf3", "taskset", GNU_TIME, str(CNI_DIR / "ptp"), str(CNI_DIR / "host-local")):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            raise SystemExit(
                f"{tool} missing: apt-get install iperf3 time containernetworking-plugins"
            )
    q = args.quick
    cfg = {
        "runs": 10 if q else 30,
        "sizes": [100, 1000] if q else [100, 1000, 4000],
        "big": 1000 if q else 4000,
        "churn_runs": 20 if q else 100,
        "guide_full_down_max": 100 if q else 1000,
        "guide_down_sample": 20 if q else 40,
        "dp_trials": 2 if q else 5,
        "dp_seconds": 1.0 if q else 1.5,
        "dp_max_packets": 1_000_000,
        "startup_runs": 10 if q else 30,
    }
    only = set(args.only.split(",")) if args.only else {"single", "batch", "datapath", "startup"}
    started = time.time()
    results: dict = {
        "config": cfg,
        "quick": q,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "nft": sh("nft", "--version").strip(),
        },
        "command": "sudo .venv/bin/python bench/suite.py"
        + (" --quick" if q else "")
        + (f" --only {args.only}" if args.only else "")
        + (f" --rev {args.rev}" if args.rev else ""),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    try:
        with tempfile.TemporaryDirectory() as tmpd, contextlib.ExitStack() as stack:
            tmp = Path(tmpd)
            results["code"] = prepare_code(args.rev, tmp)
            log(f"measuring {results['code']}")
            if "single" in only:
                with contextlib.ExitStack() as st:
                    results["single"] = bench_single(st, tmp, cfg["runs"])
            if "batch" in only:
                results["batch"], results["churn"] = bench_batch(
                    stack,
                    tmp,
                    cfg["sizes"],
                    cfg["big"],
                    cfg["churn_runs"],
                    cfg["guide_full_down_max"],
                    cfg["guide_down_sample"],
                )
            if "datapath" in only:
                with contextlib.ExitStack() as st:
                    results["datapath"] = bench_datapath(
                        st,
                        tmp,
                        cfg["big"],
                        cfg["dp_trials"],
                        cfg["dp_seconds"],
                        cfg["dp_max_packets"],
                    )
            if "startup" in only:
                with contextlib.ExitStack() as st:
                    results["startup"] = bench_startup(st, tmp, cfg["startup_runs"])
    finally:
        sweep()
    results["elapsed_s"] = time.time() - started
    rows = rows_for(results, cfg["big"], q)
    text = print_report(results, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = args.out / f"suite-{stamp}{'-quick' if q else ''}"
    base.with_suffix(".json").write_text(json.dumps({**results, "rows": rows}, indent=2) + "\n")
    with base.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["section"])
        w.writeheader()
        w.writerows(rows)
    base.with_suffix(".md").write_text(
        f"{results['date']}, {results['machine']['cpus']} vCPU, kernel "
        f"{results['machine']['kernel']}, {results['machine']['nft']}; "
        f"`{results['command']}` ({results['elapsed_s']:.0f} s)\n\n"
        + table_md(rows)
        + "\n```\n"
        + text
        + "```\n"
    )
    log(f"wrote {base}.json/.csv/.md in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
