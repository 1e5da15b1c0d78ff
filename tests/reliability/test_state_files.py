"""Damaged, foreign or unwritable state files: up/down/ls answer with one line and a non-zero
exit, and the kernel is left exactly as it was. Also: verbs on a host with no state file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import Host
from tests.reliability.helpers import assert_consistent, inet_addrs, ls, one_line_error

pytestmark = pytest.mark.privileged

VERBS = [("up", "new"), ("down", "v3"), ("ls", "--json")]


def kernel(host: Host) -> tuple:
    links = {n: (inet_addrs(d), d.get("ifalias")) for n, d in host.links().items()}
    return links, host.nft_text(), host.iptables_rules(), host.forwarding()


def populated(host: Host) -> bytes:
    for i in range(6):
        host.fireroute("up", f"v{i}", *(("--backend", "iptables") if i % 2 else ()))
    return host.state.read_bytes()


def sql(host: Host, *statements: str) -> None:
    db = sqlite3.connect(host.state)
    for s in statements:
        db.execute(s)
    db.commit()
    db.close()


DAMAGE = {
    "truncated-header": lambda h, good: h.state.write_bytes(good[:60]),
    "truncated-half": lambda h, good: h.state.write_bytes(good[: len(good) // 2]),
    "random-bytes": lambda h, good: h.state.write_bytes(os.urandom(len(good))),
    "schema-version-6": lambda h, good: sql(h, "PRAGMA user_version = 6"),
    "schema-version-99": lambda h, good: sql(h, "PRAGMA user_version = 99"),
    "vms-table-missing": lambda h, good: sql(h, "DROP TABLE vms"),
}
DAMAGE["schema-version-negative"] = lambda h, good: sql(h, "PRAGMA user_version = -1")
DAMAGE["meta-table-missing"] = lambda h, good: sql(h, "DROP TABLE meta")
DAMAGE["ports-table-missing"] = lambda h, good: sql(h, "DROP TABLE ports")
CASES = [pytest.param(k, f, id=k) for k, f in DAMAGE.items()]


@pytest.mark.parametrize("kind,damage", CASES)
def test_damaged_state_file(host: Host, kind: str, damage):
    good = populated(host)
    before = kernel(host)
    for verb in VERBS:
        host.state.write_bytes(good)
        damage(host, good)
        damaged = host.state.read_bytes()
        p = host.fireroute(*verb, check=False)
        one_line_error(p.returncode, p.stderr)
        assert p.returncode == 5 and "state file" in p.stderr, (verb, p.stderr)
        assert kernel(host) == before, verb
        assert host.state.read_bytes() == damaged, f"{verb} rewrote the damaged state file"
    host.state.write_bytes(good)
    assert_consistent(host)


def as_root_without_dac_override(host: Host, *args: str) -> subprocess.CompletedProcess:
    """Root that file permissions apply to (CAP_DAC_OVERRIDE and friends dropped)."""
    return subprocess.run(
        ["ip", "netns", "exec", host.ns, "setpriv", "--bounding-set",
         "-dac_override,-dac_read_search,-fowner", sys.executable, "-m", "fireroute", *args],
        capture_output=True, text=True, env={**os.environ, "FIREROUTE_STATE": str(host.state)},
    )  # fmt: skip


@pytest.mark.parametrize(
    "what",
    ["file", "dir"],
)
def test_read_only_state(host: Host, what: str):
    """up/down: one line, exit 5, kernel and file unchanged. ls is a read: a read-only state
    file must still be listed (deliberately not an error)."""
    populated(host)
    want = ls(host)
    before = kernel(host)
    good = host.state.read_bytes()
    if what != "file":
        os.chmod(host.state, 0o600)
        os.chmod(host.state.parent, 0o555)
    else:
        os.chmod(host.state, 0o444)
    try:
        for verb in (("up", "new"), ("down", "v3"), ("down", "--all")):
            p = as_root_without_dac_override(host, *verb)
            one_line_error(p.returncode, p.stderr)
            assert p.returncode == 5, p.stderr
            assert kernel(host) == before
        p = as_root_without_dac_override(host, "ls", "--json")
        assert p.returncode == 0 and p.stderr == ""
        import json

        assert json.loads(p.stdout) == want
    finally:
        os.chmod(host.state.parent, 0o755)
        os.chmod(host.state, 0o600)
    assert host.state.read_bytes() == good
    assert_consistent(host)


@pytest.mark.parametrize("recorded", [True, False])
def test_gc_with_the_state_file_lost(host: Host, recorded: bool):
    host.fireroute("up", "a")
    host.fireroute("up", "b", "--backend", "iptables")
    state_id = ls(host)[0]["owner_tag"].split(":")[0]
    before = kernel(host)
    host.state.unlink()
    # a new state file owns none of the lost one's objects (they could be anyone's): its gc
    # leaves them all in place
    p = host.fireroute("gc", check=False)
    assert p.returncode == 0, p.stderr
    assert kernel(host) == before
    # naming the lost file's id collects them, and forwarding goes back to its value before
    # fireroute: it is recorded for the namespace, not only in the lost file. Without that
    # record (/run cleared by hand) gc leaves forwarding as it is rather than guess (and
    # possibly cut off a router)
    if not recorded:
        from fireroute.kernel import forwarding

        forwarding.forget_namespace(f"/var/run/netns/{host.ns}")
    p = host.fireroute("gc", "--state-id", state_id, check=False)
    assert p.returncode == 0, p.stderr
    assert_consistent(host, forwarding_when_empty="0" if recorded else "1")


@pytest.mark.parametrize("verb", [("down", "a"), ("down", "--all"), ("teardown",), ("gc",)])
def test_idempotent_verbs_on_a_fresh_host(host: Host, verb):
    env = {"FIREROUTE_STATE": str(host.state.parent / "never" / "state.db")}
    p = host.fireroute(*verb, check=False, env=env)
    assert p.returncode == 0, p.stderr
