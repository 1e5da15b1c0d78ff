"""A quiet manager (the daemon's ``Host(quiet=True)``: no answer of its carries warnings) does
not read iptables-nft's FORWARD policy behind ``up``'s warning; a loud one (the CLI's, the
control) reads it and warns of a DROP."""

from __future__ import annotations

from fireroute.api import Host
from fireroute.kernel.run import Result
from fireroute.model import Options
from tests.unit.test_up_decisions import host  # noqa: F401 - the fixture

DROPPING = "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n"


def _up(m, name: str) -> tuple[list[list[str]], list[str]]:
    reads, runner = [], m.runner

    def recording(argv, stdin=None):
        reads.append(argv)
        if argv == ["iptables-nft-save", "-t", "filter"]:
            return Result(0, DROPPING, "")
        return runner(argv, stdin)

    m.runner = recording
    res = m.up([name], Options())
    return reads, res.warnings


def test_a_quiet_manager_skips_the_forward_policy_read(host):  # noqa: F811
    loud = host("loud")
    reads, warnings = _up(loud, "a")
    assert ["iptables-nft-save", "-t", "filter"] in reads
    assert len(warnings) == 1 and "FORWARD policy is DROP" in warnings[0], warnings
    quiet = host("quiet")
    quiet.read_policy = False
    reads, warnings = _up(quiet, "a")
    assert ["iptables-nft-save", "-t", "filter"] not in reads and warnings == []


def test_host_quiet_sets_its_manager(tmp_path):
    assert Host(tmp_path / "a.db")._manager.read_policy is True
    assert Host(tmp_path / "b.db", quiet=True)._manager.read_policy is False
