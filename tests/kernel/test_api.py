"""The Python API (fireroute.Host) against the kernel, in the test's host namespace: it makes
exactly what the CLI makes, answers with the same errors (by type), and both can be used on
one state file. The API runs in-process, so each call runs in a child process started inside
the namespace (the test process itself stays in the machine's own namespace)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fireroute
from fireroute import api
from tests.conftest import Host

pytestmark = pytest.mark.privileged

DRIVER = """
import json, sys
import fireroute
calls = json.loads(sys.argv[2])
host = fireroute.Host(sys.argv[1], in_process=sys.argv[3] == "1")
out = []
for verb, args, kwargs in calls:
    try:
        got = getattr(host, verb)(*args, **kwargs)
        if isinstance(got, fireroute.Vm):
            got = {"attrs": {k: getattr(got, k) for k in got.__slots__ if k != "_record"},
                   "dict": got.as_dict()}
        elif isinstance(got, list) and got and isinstance(got[0], fireroute.Vm):
            got = [v.name for v in got]
        out.append({"ok": got})
    except fireroute.api.FirerouteError as exc:
        out.append({"error": type(exc).__name__, "message": str(exc)})
print(json.dumps(out))
"""


def call(host: Host, *calls: tuple, in_process: bool = False) -> list[dict]:
    """Run API calls (verb, args, kwargs) in one process inside the host namespace."""
    argv = ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", DRIVER]
    argv += [str(host.state), json.dumps([list(c) for c in calls]), "1" if in_process else "0"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return json.loads(p.stdout)


def kernel(host: Host) -> tuple:
    links = {
        n: (d.get("ifalias"), d.get("group"), host.addrs(n))
        for n, d in host.links().items()
        if n.startswith("fr-")
    }
    return links, host.nft_text(), host.forwarding()


@pytest.mark.parametrize("in_process", [False, True])
def test_api_makes_what_the_cli_makes(host: Host, tmp_path, in_process: bool):
    opts = {"allow_host_ports": ["53/udp", "22/tcp"], "dns": ["192.0.2.53"]}
    [up] = call(host, ("up", ["web-1"], opts), in_process=in_process)
    vm = up["ok"]["attrs"]
    assert (
        vm["tap"] == "fr-web-1" and vm["guest_ip"] == "172.16.0.2" and vm["gateway"] == "172.16.0.1"
    )
    assert vm["mac"] == "06:00:AC:10:00:02"
    assert vm["boot_args"].startswith("ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off")
    assert vm["firecracker"]["host_dev_name"] == "fr-web-1"
    cli = json.loads(host.fireroute("show", "web-1", "--format", "json").stdout)
    assert up["ok"]["dict"] == cli  # the same record as the CLI shows
    assert json.loads(host.fireroute("check", "--json").stdout)["ok"]
    made = kernel(host)
    host.fireroute("teardown")
    host.fireroute(
        "up", "web-1", "--allow-host-port", "53/udp", "--allow-host-port", "22/tcp",
        "--dns", "192.0.2.53",
    )  # fmt: skip
    assert kernel(host) == made  # the CLI makes the same objects (the same state id aside)
    got = call(host, ("check", [], {}), ("list", [], {}), ("down", ["web-1", "nope"], {}))
    assert got[0]["ok"]["ok"] is True
    assert got[1]["ok"] == ["web-1"]
    assert got[2]["ok"] == ["web-1"]  # only the one that was up
    assert not [n for n in host.links() if n.startswith("fr-")]


def test_api_errors_are_the_cli_errors(host: Host):
    got = call(
        host,
        ("up", ["a"], {"block_size": "31"}),
        ("up", ["a"], {"no_such_option": True}),
        ("up", ["a"], {"masquerade": "yes"}),
        ("get", ["nope"], {}),
        ("up", ["a"], {}),
        ("up", ["a"], {"backend": "iptables"}),
        ("up", ["b"], {"mac": "06:00:AC:10:00:02"}),
    )
    assert [g.get("error") for g in got] == [
        "UsageError",
        "UsageError",
        "UsageError",
        "NotFound",
        None,  # the positive control: a good request is made
        "ConflictError",  # up with other options
        "ConflictError",  # another VM's MAC
    ], got
    assert "unknown option" in got[1]["message"] and "--masquerade" in got[2]["message"]
    cli = host.fireroute("up", "a", "--block-size", "31", check=False)
    assert cli.stderr.strip() == f"fireroute: {got[0]['message']}"  # the same line
    assert json.loads(host.fireroute("ls", "--json").stdout)[0]["name"] == "a"


def test_api_and_cli_share_the_state_file(host: Host):
    host.fireroute("up", "from-cli")
    got = call(host, ("up", ["from-api"], {}), ("list", [], {}))
    assert sorted(got[1]["ok"]) == ["from-api", "from-cli"]
    names = {v["name"] for v in json.loads(host.fireroute("ls", "--json").stdout)}
    assert names == {"from-api", "from-cli"}
    assert sorted(call(host, ("teardown", [], {}))[0]["ok"]) == ["from-api", "from-cli"]
    assert host.forwarding() == "0"


def test_public_names_are_exported_and_documented():
    for name in api.__all__:
        obj = getattr(api, name)
        assert obj.__doc__, name
    assert fireroute.Host is api.Host and fireroute.Vm is api.Vm
    for verb in ("up", "up_many", "plan_up", "down", "get", "list", "check", "gc", "restore"):
        assert getattr(api.Host, verb).__doc__ or verb == "list", verb
    with pytest.raises(AttributeError):
        fireroute.NoSuchThing  # noqa: B018 - the lazy attribute look-up refuses others
