"""Run one program: argv list (never a shell string), optional stdin, a timeout."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from fireroute.errors import MissingTool

PACKAGES = {
    "ip": "iproute2",
    "nft": "nftables",
    "iptables-nft-restore": "iptables",
    "iptables-nft-save": "iptables",
}


class Result:
    __slots__ = ("rc", "out", "err")

    def __init__(self, rc: int, out: str, err: str) -> None:
        self.rc = rc
        self.out = out
        self.err = err


Runner = Callable[[list[str], "str | None"], Result]


def read_value(path: str) -> str | None:
    """A /proc or /sys value, stripped; None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


HELD_FDS: set[int] = set()
"""File descriptors every child inherits: the state lock, so that a child that outlives a
killed fireroute (an ``ip -batch`` half-way through) keeps the lock until it has finished,
and gc can never race it."""


def run(argv: list[str], stdin: str | None = None, timeout: float = 60.0) -> Result:
    try:
        p = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            pass_fds=tuple(HELD_FDS),
        )
    except FileNotFoundError:
        pkg = PACKAGES.get(argv[0], argv[0])
        raise MissingTool(f"{argv[0]} not found: install the {pkg} package") from None
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]} timed out after {timeout:.0f}s")
    return Result(p.returncode, p.stdout, p.stderr)


def which(tool: str) -> str | None:
    """``shutil.which`` without importing shutil (~6 ms on the per-VM path)."""
    for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep):
        path = os.path.join(d, tool)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None
