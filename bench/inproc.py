"""Per-VM up and down plans through Executor (ip/nft processes) and InProcessExecutor, and
four ways of running the per-VM nft scripts, inside a throwaway network namespace.

    sudo .venv/bin/python bench/inproc.py [N]     (default N=200 VMs per variant)

The script re-executes itself under ``unshare --net`` (a namespace that goes away with it),
so nothing is made in the caller's namespace. Plans are built with the planners the way
manager.up/down builds them for a table that already holds a VM (the per-VM steady state).
Printed: medians in ms and the ratio to the process executor.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from fireroute.kernel.apply import Executor  # noqa: E402
from fireroute.kernel.inproc import InProcessExecutor  # noqa: E402
from fireroute.kernel.nftnl import Nftnl  # noqa: E402
from fireroute.model import Options, Vm  # noqa: E402
from fireroute.plan.compiler import compile  # noqa: E402
from fireroute.plan.diff import ALL, DELETE, Scope, diff  # noqa: E402
from fireroute.plan.steps import Plan  # noqa: E402
from fireroute.want.render import desired  # noqa: E402

TABLE = "firecracker"
FORWARDING = ("forwarding", (None, "net.ipv4.ip_forward"))
MARK = "FRBENCHNS"


def vm(i: int) -> Vm:
    net = IPv4Network(f"172.16.{i // 64}.{(i % 64) * 4}/30")
    mac = f"06:00:AC:10:{i // 64:02X}:{(i % 64) * 4 + 2:02X}"
    v = Vm(f"b{i}", net, f"fr-b{i}", mac, "up0", Options())
    v.owner = "5ca1ab1e"
    return v


def _table(want: dict) -> dict:
    """What a table that stays has: itself, its sets and chains (and forwarding on)."""
    return {k: o for k, o in want.items() if k[0].startswith("nft ") and o.vm is None}


def up_plan(v: Vm, fresh: bool = False) -> Plan:
    """The compiler's up of ``v``: a table made whole (``fresh``), else one that stays."""
    want = desired([v], None, v.owner)
    have = {} if fresh else _table(want)
    have[FORWARDING] = want[FORWARDING]
    return Plan(compile(diff(have, want, ALL, v.owner)))


def down_plan(v: Vm) -> Plan:
    """The compiler's down of ``v`` from a table that stays."""
    have = desired([v], None, v.owner)
    ops = diff(have, _table(have), Scope([v.name]), v.owner)
    return Plan(compile([o for o in ops if o.verb == DELETE], found=have))


def _nft(plan: Plan) -> str:
    return next(s.text for s in plan.steps if s.tool == "nft")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def one_line_blocks(script: str) -> list[str]:
    """nft -i reads one command per line (a multi-line block is a syntax error), so a
    ``table ... { ... }`` block becomes one line; each line is then its own transaction."""
    out: list[str] = []
    block: list[str] | None = None
    for line in script.splitlines():
        if block is not None:
            if line == "}":
                out.append(block[0] + " " + "; ".join(block[1:]) + "; }")
                block = None
            else:
                block.append(line.strip())
        elif line.endswith("{") and line.startswith("table "):
            block = [line]
        elif line.strip():
            out.append(line)
    return out


class NftInteractive:
    """One ``nft -i`` fed on stdin. nft prints nothing for a command that worked and keeps
    going after one that failed (it exits 0 either way), so completion is marked by a line
    that always fails to parse, ``MARKn``: nft echoes it under its error on stderr
    (unbuffered). The command failed if an error precedes the marker's own. Each line is
    its own transaction: a script is no longer all or nothing."""

    def __init__(self) -> None:
        self.p = subprocess.Popen(
            ["nft", "-i"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.n = 0

    def run(self, script: str) -> str:
        """The script's error text ("" when it worked)."""
        assert self.p.stdin is not None and self.p.stderr is not None
        self.n += 1
        mark = f"MARK{self.n}"
        lines = one_line_blocks(script)
        self.p.stdin.write("\n".join(lines) + f"\n{mark}\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stderr.readline()
            if not line:
                raise RuntimeError("nft -i exited")
            if line.rstrip("\n") == mark:
                self.p.stderr.readline()  # the caret line under it
                return "".join(out[:-1])  # less the marker's "syntax error" line
            out.append(line)

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait()


class LibNftables:
    """libnftables through ctypes (GPL-2: measured here only, never used by fireroute)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL("libnftables.so.1")
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib, self.ctx = lib, lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, script: str) -> int:
        return self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode())


def ip_nft_variants(vms: list[Vm]) -> dict[str, list[float]]:
    """Per VM: its up script (sets re-declared, elements added) then its down script."""
    scripts = [(_nft(up_plan(v)), _nft(down_plan(v))) for v in vms]

    def proc(s: str) -> None:
        assert subprocess.run(["nft", "-f", "-"], input=s, text=True).returncode == 0

    inter, lib, nl = NftInteractive(), LibNftables(), Nftnl()

    def interactive(s: str) -> None:
        assert inter.run(s) == ""

    def libnft(s: str) -> None:
        assert lib.run(s) == 0

    out: dict[str, list[float]] = {}
    for name, fn in (
        ("(a) nft -f - per call", proc),
        ("(b) one nft -i, marker line", interactive),
        ("(c) nf_tables netlink (nftnl.py)", nl.run),
        ("(d) libnftables via ctypes", libnft),
    ):
        out[name] = [timed(lambda u=u, d=d, fn=fn: (fn(u), fn(d))) for u, d in scripts]
    # (b) tells a failure apart: a delete of an element that is not there
    err = inter.run(f'delete element ip {TABLE} taps {{ "nope" }}\n')
    assert "No such file or directory" in err, err
    inter.close()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    if os.environ.get(MARK) != "1":  # into a network namespace of our own, gone when we end
        env = {**os.environ, MARK: "1"}
        os.execvpe("unshare", ["unshare", "--net", sys.executable, *sys.argv], env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Executor().apply_all(up_plan(vm(0), fresh=True))  # the table, with one VM in it
    rows: dict[str, list[float]] = {}
    proc, inproc = Executor(), InProcessExecutor()
    for i in range(1, n + 1):  # alternate, so that drift on a noisy host hits both alike
        for label, ex, v in (("process", proc, vm(2 * i)), ("in-process", inproc, vm(2 * i + 1))):
            rows.setdefault(f"up   {label}", []).append(
                timed(lambda e=ex, v=v: e.apply_all(up_plan(v)))
            )
            rows.setdefault(f"down {label}", []).append(
                timed(lambda e=ex, v=v: e.apply_best_effort(down_plan(v)))
            )
    assert inproc.in_process == 4 * n, inproc.in_process  # 2 groups per plan, none fell back
    print(f"per-VM plans, {n} VMs each, medians (ms); table already holds one VM")
    print(f"{'plan':<28}{'median':>9}{'p90':>9}{'ratio':>8}")
    for verb in ("up", "down"):
        base = statistics.median(rows[f"{verb:<4} process"])
        for label in ("process", "in-process"):
            xs = rows[f"{verb:<4} {label}"]
            med, p90 = statistics.median(xs), statistics.quantiles(xs, n=10)[-1]
            print(f"{verb + ' ' + label:<28}{med:>9.3f}{p90:>9.3f}{base / med:>7.1f}x")
    print(f"\nnft per-VM up script + down script, {n} VMs, medians (ms)")
    nft_rows = ip_nft_variants([vm(2 * n + 2 + i) for i in range(n)])
    base = statistics.median(nft_rows["(a) nft -f - per call"])
    for name, xs in nft_rows.items():
        med = statistics.median(xs)
        print(f"{name:<36}{med:>9.3f}{base / med:>7.1f}x")


if __name__ == "__main__":
    main()
