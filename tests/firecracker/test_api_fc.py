"""The Firecracker verbs through the Python API (fireroute.Host), against the stand-in API
server: the API runs in a child process inside the test's host namespace (the VM's network is
real), the stand-in answers on its unix socket as Firecracker would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import Host
from tests.firecracker.test_fc_verbs import STARTED, boot_source, start

pytestmark = pytest.mark.privileged

DRIVER = """
import json, sys
import fireroute
host = fireroute.Host(sys.argv[1])
verb, args, kwargs = json.loads(sys.argv[2])
try:
    got = getattr(host, verb)(*args, **kwargs)
    if isinstance(got, tuple):
        got = [got[0].as_dict(), got[1]]
    print(json.dumps({"ok": got}))
except fireroute.api.FirerouteError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def api(host: Host, verb: str, *args: object, **kwargs: object) -> dict:
    argv = ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", DRIVER]
    p = subprocess.run(
        [*argv, str(host.state), json.dumps([verb, args, kwargs])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_up_attached_rolls_back_a_refused_attach(host: Host, standin):
    boot_source(standin)
    start(standin)  # a started VMM refuses a new interface
    got = api(host, "up_attached", "web-1", standin.socket_path, attach={"boot_source": True})
    assert got.get("error") == "FirecrackerFailed" and STARTED in got["message"], got
    assert "rolled back" in got["message"]
    assert not [n for n in host.links() if n.startswith("fr-")]
    standin.started = False  # the positive control: before InstanceStart it is attached
    got = api(host, "up_attached", "web-1", standin.socket_path, attach={"boot_source": True})
    vm, report = got["ok"]
    assert vm["host_dev"] == "fr-web-1" and report["interface"]["host_dev_name"] == "fr-web-1"
    assert report["boot_args"]["ip"] == vm["boot_args"]
    assert standin.interfaces["eth0"]["guest_mac"] == vm["mac"]


def test_attach_limit_config_and_their_errors(host: Host, standin):
    host.fireroute("up", "web-1")
    boot_source(standin)
    bad = api(host, "attach", "web-1", standin.socket_path, mtu=10)
    assert bad.get("error") == "UsageError" and "--mtu" in bad["message"]  # before sending
    assert "eth0" not in standin.interfaces
    got = api(host, "attach", "web-1", standin.socket_path, rx_rate="200Mbit")
    assert got["ok"]["interface"]["rx_rate_limiter"]["bandwidth"]["size"] > 0
    assert standin.interfaces["eth0"]["host_dev_name"] == "fr-web-1"
    start(standin)
    got = api(host, "limit", "web-1", standin.socket_path, tx_rate="off")
    assert got["ok"]["patch"]["tx_rate_limiter"]["bandwidth"]["size"] == 0
    none = api(host, "limit", "web-1", standin.socket_path)
    assert none.get("error") == "UsageError" and "nothing to change" in none["message"]
    cfg = api(host, "config", "web-1", {"boot-source": {"kernel_image_path": "/k"}})["ok"]
    assert cfg["network-interfaces"][0]["host_dev_name"] == "fr-web-1"
    assert "ip=" in cfg["boot-source"]["boot_args"]
    assert api(host, "attach", "nope", standin.socket_path)["error"] == "NotFound"
