"""Many fireroute processes against one state file at once: the state lock serialises them, every
VM gets its own block, and afterwards the kernel holds exactly what the state file says."""

from __future__ import annotations

import random
import re

import pytest

from tests.conftest import Host
from tests.reliability.helpers import (
    assert_consistent,
    assert_nothing_ours,
    finish,
    ls,
    one_line_error,
    spawn,
)

pytestmark = pytest.mark.privileged

N = 64
BUSY = re.compile(r"fireroute: state file \S+ is busy: .* \(retried \d+ times\)\n")


def run_all(host: Host, argvs: list[list[str]], env: dict[str, str] | None = None) -> list:
    procs = [spawn(host, *argv, env=env) for argv in argvs]
    return [(argv, *finish(p)) for argv, p in zip(argvs, procs, strict=True)]


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_64_parallel_up_then_64_parallel_down(host: Host, backend: str):
    names = [f"p{i}" for i in range(N)]
    results = run_all(host, [["up", n, "--backend", backend] for n in names])
    failed = [(a, rc, err) for a, rc, _out, err in results if rc != 0 or err]
    assert failed == [], failed  # default lock wait is 60 s: nobody may give up
    vms = assert_consistent(host)
    assert sorted(v["name"] for v in vms) == sorted(names)
    assert len({v["guest_ip"] for v in vms}) == N
    assert host.forwarding() == "1"

    results = run_all(host, [["down", n] for n in names])
    failed = [(a, rc, err) for a, rc, _out, err in results if rc != 0 or err]
    assert failed == [], failed
    assert all(out == f"vm {a[1]} down\n" for a, _rc, out, _err in results)
    assert_nothing_ours(host, forwarding="0")


def test_short_lock_timeout_gives_a_clear_busy_error(host: Host):
    """With a tiny FIREROUTE_LOCK_TIMEOUT some callers give up: each with the one-line busy
    error (exit 75), and only the ones that succeeded exist, fully."""
    from fireroute.state.store import Store

    host.fireroute("up", "first")  # the state file exists: its lock can be held here
    with Store(host.state, create=False).locked(timeout=0):  # every caller now meets a holder
        held = run_all(host, [["up", f"h{i}"] for i in range(4)], {"FIREROUTE_LOCK_TIMEOUT": "0.2"})
    for _argv, rc, _out, err in held:
        one_line_error(rc, err)
        assert rc == 75 and BUSY.fullmatch(err), err
    names = [f"q{i}" for i in range(N)]
    results = run_all(host, [["up", n] for n in names], env={"FIREROUTE_LOCK_TIMEOUT": "0.02"})
    ok = set()
    for argv, rc, _out, err in results:
        if rc == 0:
            assert err == ""
            ok.add(argv[1])
        else:
            one_line_error(rc, err)
            assert rc == 75 and BUSY.fullmatch(err), err
    vms = assert_consistent(host)
    assert {v["name"] for v in vms} == ok | {"first"}


def test_mixed_up_down_gc_concurrently(host: Host):
    old = [f"old-{i}" for i in range(24)]
    host.fireroute("up", "--count", "12", "--prefix", "old-")  # old-0 .. old-11, nft
    for n in old[12:]:
        host.fireroute("up", n, "--backend", "iptables")
    new = [f"new-{i}" for i in range(24)]
    argvs = (
        [["down", n] for n in old]
        + [["up", n, "--backend", "nft" if i % 2 else "iptables"] for i, n in enumerate(new)]
        + [["gc"] for _ in range(8)]
        + [["ls", "--json"] for _ in range(4)]
        + [["check"] for _ in range(4)]
    )
    random.Random(7).shuffle(argvs)
    results = run_all(host, argvs)
    for argv, rc, _out, err in results:
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        if argv[0] == "check":
            # check takes no lock: it may see another process half-way; it must still answer
            assert rc in (0, 1), (argv, rc, err)
        else:
            assert (rc, err) == (0, ""), (argv, rc, err)
    vms = assert_consistent(host)
    assert sorted(v["name"] for v in vms) == sorted(new)
    assert {v["backend"] for v in vms} == {"nft", "iptables"}
    host.fireroute("down", "--all")
    assert_nothing_ours(host)
    assert ls(host) == []
