"""kernel.run: real child processes (no network), no deadlock on large input and output."""

from __future__ import annotations

import os

import pytest

from fireroute.errors import MissingTool
from fireroute.kernel import run as runmod


def test_stdout_stderr_and_exit_code_are_captured() -> None:
    res = runmod.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.rc, res.out, res.err) == (3, "out\n", "err\n")


def test_large_input_and_output_do_not_deadlock() -> None:
    data = "".join(f"line {i}\n" for i in range(200_000))  # ~2.3 MB, far beyond a pipe
    res = runmod.run(["sh", "-c", "cat; cat /dev/null >&2"], data)
    assert res.rc == 0 and res.out == data


def test_no_stdin_reads_empty() -> None:
    assert runmod.run(["cat"]).out == ""


def test_missing_program_is_a_missing_tool() -> None:
    with pytest.raises(MissingTool, match="no-such-tool-xyz not found"):
        runmod.run(["no-such-tool-xyz"])


def test_timeout_kills_the_child() -> None:
    res = runmod.run(["sleep", "5"], timeout=0.2)
    assert res.rc == 124 and "timed out" in res.err


def test_children_run_concurrently() -> None:
    a = runmod.start(["sh", "-c", "echo a"])
    b = runmod.start(["sh", "-c", "echo b >&2; exit 1"])
    rb, ra = b.wait(), a.wait()
    assert (ra.rc, ra.out, rb.rc, rb.err) == (0, "a\n", 1, "b\n")


def test_held_fds_are_inherited_and_nothing_else(tmp_path) -> None:
    held = os.open(tmp_path / "lock", os.O_CREAT | os.O_RDWR)
    other = os.open(tmp_path / "other", os.O_CREAT | os.O_RDWR)
    runmod.HELD_FDS.add(held)
    try:
        res = runmod.run(["sh", "-c", f"ls /proc/self/fd; test -e /proc/self/fd/{held}"])
    finally:
        runmod.HELD_FDS.discard(held)
    fds = {int(x) for x in res.out.split()}
    assert res.rc == 0 and held in fds and other not in fds
    assert not os.get_inheritable(held)  # only for the child's sake
    os.close(held)
    os.close(other)


def test_descriptors_we_inherited_do_not_reach_children_and_sigpipe_is_default(tmp_path) -> None:
    """As subprocess's close_fds did: an fd fireroute was started with stays out of ip/nft;
    and a child gets SIGPIPE's default action back (Python ignores it)."""
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(runmod.__file__).resolve().parents[2])
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from fireroute.kernel.run import run;"
        "print(run(['sh', '-c', sys.argv[2]]).out)"
    )
    with open(tmp_path / "f", "w") as f:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                src,
                "ls /proc/self/fd; yes | head -1; grep SigIgn /proc/self/status",
            ],
            pass_fds=(f.fileno(),),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        inherited = f.fileno()
    fds = {int(x) for x in out.split() if x.isdigit()}
    assert inherited not in fds, out
    assert "y" in out.split()
    ign = int(out.split("SigIgn:")[1].split()[0], 16)
    assert not ign & (1 << (13 - 1)), out  # SIGPIPE not ignored
