"""The systemd units in scripts/ (installed nowhere by the tests): each parses as a unit with
the sections systemd needs, starts a fireroute command whose arguments fireroute's own parser
takes, restarts on failure and keeps the capabilities its command needs; and, where
``systemd-analyze`` is installed, ``systemd-analyze verify`` finds nothing to say of it
(beside the control that it does speak of a unit with a bad key)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
UNITS = {
    "fireroute.service": ("serve", {"CAP_NET_ADMIN", "CAP_NET_RAW"}),
    "fireroute-ra.service": ("ra", {"CAP_NET_RAW"}),
}
BINARY = "/usr/local/bin/fireroute"  # where scripts/install.sh links scripts/fireroute


def parse(text: str) -> dict[str, dict[str, str]]:
    """A unit file's sections and keys (systemd's syntax: comments, ``[Section]``,
    ``Key=value``; no key given twice in these units)."""
    out: dict[str, dict[str, str]] = {}
    section: dict[str, str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        key, eq, value = line.partition("=")
        assert section is not None and eq and key.strip(), line
        assert key.strip() not in section, f"{key} given twice"
        section[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_unit_starts_a_fireroute_command_its_parser_takes(name: str):
    verb, caps = UNITS[name]
    unit = parse((SCRIPTS / name).read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[:2] == [BINARY, verb]
    if verb == "serve":
        from fireroute.serve.http import arguments

        args = arguments().parse_args(argv[2:])
        assert args.socket.startswith("/run/")
    else:
        from fireroute.cli.parser import build_parser

        args = build_parser(verb).parse_args(argv[1:])
        assert args.cmd == verb
    assert service["Type"] == "simple" and service["Restart"] == "on-failure"
    assert caps <= set(service["CapabilityBoundingSet"].split())
    assert service["NoNewPrivileges"] == "yes"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verify_has_nothing_to_say(name: str, tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    launcher = SCRIPTS / "fireroute"  # (verify wants ExecStart's program to exist)
    text = (SCRIPTS / name).read_text().replace(BINARY, str(launcher))
    (tmp_path / name).write_text(text)
    p = verify(tmp_path / name)
    assert (p.returncode, p.stderr) == (0, ""), p.stderr
    # the control: verify does speak of a unit with a key systemd does not know
    bad = tmp_path / f"bad-{name}"
    bad.write_text(text.replace("[Service]\n", "[Service]\nFrobnicate=yes\n"))
    assert "Frobnicate" in verify(bad).stderr
