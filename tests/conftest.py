"""Shared test helpers: throwaway network namespaces and a way to run the real CLI in them.

Nothing here touches the machine's root network namespace: every kernel object a test makes
lives in a namespace the fixture creates and deletes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


ALLOWED_SKIPS: dict[str, str] = {}
"""Tests that may skip under CI, by node id, each with the reason it was allowed. Empty: CI
runs as root with ../shared beside the checkout, so every test can run there."""

ALLOWED_SKIP_PREFIXES: dict[str, str] = {
    "tests/realvmm/": "FIRECRACKER_BIN is not set",
    # a machine without systemd (a container) has no systemd-analyze; the units are still
    # parsed and their commands checked by the other tests of that file
    "tests/unit/test_systemd_units.py::test_systemd_analyze_verify": "systemd-analyze is not",
}
"""Node id prefixes whose tests may skip under CI, but only for the reason that contains the
given text. The real-VMM tests need a Firecracker binary, which CI does not have (none may be
committed): they skip with "FIRECRACKER_BIN is not set", and any other skip there fails."""


def _allowed_skip(nodeid: str, reason: str) -> bool:
    if nodeid in ALLOWED_SKIPS:
        return True
    return any(
        nodeid.startswith(prefix) and needle in reason
        for prefix, needle in ALLOWED_SKIP_PREFIXES.items()
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ARG001
    """Under CI a skip is a failure unless the test is on ALLOWED_SKIPS (or under a prefix of
    ALLOWED_SKIP_PREFIXES, for that reason): a moved reference
    directory or a missing tool must not turn into a quietly green run."""
    outcome = yield
    report = outcome.get_result()
    if not (os.environ.get("CI") and report.skipped):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    if getattr(report, "wasxfail", None) is None and not _allowed_skip(item.nodeid, str(reason)):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (not allowed in tests/conftest.py): {reason}"


def is_root() -> bool:
    return os.geteuid() == 0


def needs_root_to(why: str) -> pytest.MarkDecorator:
    """Skip a test (or module, as ``pytestmark``) when not root, saying what root is for:
    run unprivileged, the suite runs what needs no root and skips the rest by this reason.
    As root it never skips, so under CI a root run still fails on any skip not allowed above."""
    return pytest.mark.skipif(not is_root(), reason=f"needs root to {why}")


def skip_unless_root(why: str) -> None:
    """The same skip, from inside a fixture or test (``needs_root_to`` as a call)."""
    if not is_root():
        pytest.skip(f"needs root to {why}")


needs_root = needs_root_to("create network namespaces")


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, input=input)


@dataclass
class Host:
    """A "host" namespace with an uplink veth (up0, 203.0.113.2/24, default route via
    203.0.113.1) to an "internet" namespace (down0, 203.0.113.1/24) that has no route back to
    the guests' pool, plus a state file of its own."""

    ns: str
    inet: str
    state: Path

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns, *argv, check=check)

    def sh(self, script: str) -> subprocess.CompletedProcess:
        """A shell script in the host namespace (network only, as fireroute itself runs, so
        the namespaces fireroute made are visible under /var/run/netns)."""
        return sh("nsenter", f"--net=/var/run/netns/{self.ns}", "sh", "-ec", script)

    def fireroute(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "FIREROUTE_STATE": str(self.state), **(env or {})}
        p = subprocess.run(
            # nsenter switches only the network namespace (not the mount namespace, as
            # "ip netns exec" does), so namespaces fireroute creates (clone mode) persist
            [
                "nsenter",
                f"--net=/var/run/netns/{self.ns}",
                sys.executable,
                "-m",
                "fireroute",
                *args,
            ],
            capture_output=True,
            text=True,
            env=full_env,
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"fireroute {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}"
            )
        return p

    def links(self) -> dict[str, dict]:
        out = self.run("ip", "-j", "addr", "show").stdout
        return {link["ifname"]: link for link in json.loads(out)}

    def addrs(self, ifname: str) -> list[str]:
        link = self.links()[ifname]
        return [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        ]

    def nft(self) -> list[dict]:
        out = self.run("nft", "-j", "list", "ruleset").stdout
        return json.loads(out)["nftables"]

    def nft_text(self) -> str:
        return self.run("nft", "list", "ruleset").stdout

    def set_elements(self, table: str, name: str) -> list:
        for item in self.nft():
            s = item.get("set")
            if s and s["table"] == table and s["name"] == name:
                return [
                    e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
                    for e in s.get("elem", [])
                ]
        return []

    def iptables_rules(self) -> list[str]:
        out = self.run("iptables-nft-save").stdout
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def forwarding(self) -> str:
        return self.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()


def make_host(tmp_path: Path, tag: str = "") -> Iterator[Host]:
    """The same topology the demo and the benchmarks use (fireroute.lab.sandbox)."""
    from fireroute.lab.sandbox import Sandbox

    with Sandbox(prefix=f"frt{tag}") as sb:
        h = Host(sb.host, sb.internet, tmp_path / "state.db")
        try:
            yield h
        finally:
            remove_clone_namespaces(tmp_path)


def remove_clone_namespaces(root: Path) -> None:
    """Clone namespaces live beside the host namespace, not inside it: remove those of every
    state file under ``root`` (a test that ends without teardown must not leave them; a second
    state file beside the first, as ``other.db``, included)."""
    import sqlite3

    for state in root.rglob("*.db"):
        try:
            db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
            row = db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
            db.close()
        except sqlite3.Error:
            continue
        if not row:
            continue
        prefix = f"fireroute-{row[0]}-"
        for name in os.listdir("/var/run/netns") if os.path.isdir("/var/run/netns") else []:
            if name.startswith(prefix):
                sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    skip_unless_root("create network namespaces")
    yield from make_host(tmp_path)
