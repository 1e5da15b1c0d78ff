"""Honest answers: a repeated up with the same effective options is a no-op, a different one
names each differing option; bad environment values and argparse errors are one clean line;
SIGTERM unwinds like ^C; config --merge of a second VM keeps the first one's interface."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import Host
from tests.reliability.helpers import one_line_error

pytestmark = pytest.mark.privileged


def test_up_again_with_the_same_effective_options_is_a_no_op(host: Host):
    first = json.loads(
        host.fireroute(
            "up", "a", "--allow-host-port", "53/udp", "--allow-host-port", "22/tcp", "--json"
        ).stdout
    )[0]
    before = host.run("ip", "-4", "-d", "addr", "show").stdout, host.nft_text()
    same = [
        ["--uplink", "up0"],
        ["--tap", "fr-a"],
        ["--mac", first["mac"].lower()],
        [],
    ]
    for extra in same:
        p = host.fireroute(
            "up",
            "a",
            "--allow-host-port",
            "22/tcp",
            "--allow-host-port",
            "53/udp",
            *extra,
            check=False,
        )
        assert p.returncode == 0, (extra, p.stderr)
    assert (host.run("ip", "-4", "-d", "addr", "show").stdout, host.nft_text()) == before
    p = host.fireroute("up", "a", "--backend", "iptables", "--dns", "9.9.9.9", check=False)
    one_line_error(p.returncode, p.stderr)
    assert p.returncode == 3
    assert "--backend: has nft, asked iptables" in p.stderr, p.stderr
    assert "--dns: has none, asked 9.9.9.9" in p.stderr, p.stderr
    assert "--allow-host-port: has 22/tcp,53/udp, asked none" in p.stderr, p.stderr


def test_bad_environment_and_argparse_errors_are_one_clean_line(host: Host):
    p = host.fireroute("up", "a", env={"FIREROUTE_LOCK_TIMEOUT": "abc"}, check=False)
    one_line_error(p.returncode, p.stderr)
    assert p.returncode == 2 and "FIREROUTE_LOCK_TIMEOUT" in p.stderr
    p = host.fireroute("up", "a", env={"FIREROUTE_LOCK_TIMEOUT": "0.5"})  # the neighbour
    for argv in (["up", "b", "--frobnicate"], ["frobnicate"]):
        p = host.fireroute(*argv, check=False)
        one_line_error(p.returncode, p.stderr)
        assert p.returncode == 2 and not p.stderr.startswith("fireroute: fireroute:"), p.stderr


def test_sigterm_during_up_with_a_socket_rolls_back(host: Host, tmp_path):
    """A Firecracker that accepts the connection and never answers: up waits, SIGTERM
    arrives, the tap and the lease are gone again (exit 130, as for ^C)."""
    path = str(tmp_path / "fc.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    env = {**os.environ, "FIREROUTE_STATE": str(host.state)}
    p = subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{host.ns}",
            sys.executable,
            "-m",
            "fireroute",
            "up",
            "v",
            "--socket",
            path,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        server.settimeout(30)
        conn, _ = server.accept()  # up is now waiting for Firecracker's answer
        assert "fr-v" in host.links()  # the positive control: it was really made
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        server.close()
    conn.close()
    assert p.returncode == 130, (p.returncode, err)
    assert "fr-v" not in host.links()
    assert json.loads(host.fireroute("ls", "--json").stdout) == []


def test_config_merge_of_a_second_vm_keeps_the_first(host: Host, tmp_path):
    host.fireroute("up", "a")
    host.fireroute("up", "b", "--iface-id", "eth1", "--guest-iface", "eth1")
    host.fireroute("up", "c")
    cfg = tmp_path / "vm.json"
    cfg.write_text(host.fireroute("config", "a").stdout)
    first = json.loads(cfg.read_text())
    host.fireroute("config", "b", "--merge", str(cfg), "-o", str(cfg))
    merged = json.loads(cfg.read_text())
    assert [i["host_dev_name"] for i in merged["network-interfaces"]] == ["fr-a", "fr-b"]
    assert merged["network-interfaces"][0] == first["network-interfaces"][0]
    assert merged["boot-source"] == first["boot-source"]  # the kernel takes one ip=: a's
    p = host.fireroute("config", "c", "--merge", str(cfg), "-o", str(cfg), check=False)
    one_line_error(p.returncode, p.stderr)
    assert p.returncode == 3 and "fr-a" in p.stderr and "--iface-id" in p.stderr
    assert json.loads(cfg.read_text()) == merged  # unchanged


@pytest.mark.parametrize("verb", ["doctor", "check"])
def test_without_cap_net_admin_nothing_is_called_ok(host: Host, verb: str):
    host.fireroute("up", "a")
    os.chmod(host.state.parent, 0o755)
    os.chmod(host.state, 0o644)
    argv = [
        "nsenter",
        f"--net=/var/run/netns/{host.ns}",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        sys.executable,
        "-m",
        "fireroute",
        verb,
    ]
    env = {**os.environ, "FIREROUTE_STATE": str(host.state)}
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert p.returncode != 0, p.stdout
    assert "[ok]" not in p.stdout and ": ok" not in p.stdout, p.stdout
    assert "CAP_NET_ADMIN" in p.stdout + p.stderr
    assert host.fireroute(verb).returncode == 0  # the same, as root: it can and does say ok
