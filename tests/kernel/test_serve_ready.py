"""A daemon's ready VMs (issue 25, fireroute/ready.py) against the kernel, through a real
``fireroute serve`` in the test's host namespace: a claim answers as a cold up would, its
guest (wired to the claimed tap: tests/kernel/tapwire.py) reaches the internet masqueraded,
``check`` is clean at once, the daemon makes another, a request of other options goes cold
(the control), and neither a stop nor a SIGKILL and restart leaves a ready VM behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Host, sh
from tests.kernel.tapwire import Wired
from tests.kernel.test_isolation6 import CLIENT, SERVER
from tests.kernel.test_serve import Daemon, check_clean

pytestmark = pytest.mark.privileged

CONFIG = {"fixed": {"pool": "172.16.0.0/16"}, "ready": 2}


def ready_vms(host: Host) -> list[dict]:
    vms = json.loads(host.fireroute("ls", "--json").stdout)
    return [v for v in vms if v["name"].startswith("_ready-")]


def wait_ready(host: Host, count: int, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        vms = ready_vms(host)
        if len(vms) == count and all(v["state"] == "active" for v in vms):
            return vms
        assert time.monotonic() < deadline, f"{len(vms)} ready vms, not {count}: {vms}"
        time.sleep(0.1)


def tags(host: Host) -> list[str]:
    """Every owner tag on the host: the NAT table's element comments, the iptables rules'
    comments, the links' aliases."""
    text = host.nft_text()
    found = [part.split('"')[0] for part in text.split('comment "')[1:]]
    found += [
        r.split("--comment ")[1].split()[0].strip('"')
        for r in host.iptables_rules()
        if "--comment" in r
    ]
    links = json.loads(host.run("ip", "-j", "link", "show").stdout)
    found += [str(link.get("ifalias", "")) for link in links]
    return [t for t in found if ":" in t]


@pytest.mark.parametrize(("backend", "tagged"), [("nft", 7), ("iptables", 12)])
def test_a_claim_answers_as_a_cold_up_and_its_guest_reaches_the_internet(
    host: Host, tmp_path: Path, backend: str, tagged: int
):
    fixed = {**CONFIG["fixed"], "backend": backend}  # type: ignore[dict-item]
    d = Daemon(host, tmp_path, config={**CONFIG, "fixed": fixed})
    wired = Wired(host.ns)
    try:
        before = wait_ready(host, 2)
        c = d.client()
        status, vm = c.call("PUT", "/vms/web-1", {})
        assert status == 200, vm
        assert vm["tap"] in {v["tap"] for v in before}  # a ready VM's, renamed
        assert vm == json.loads(host.fireroute("show", "web-1", "--format", "json").stdout)
        wait_ready(host, 2)  # (the refill, begun once the daemon is idle: check says a
        check_clean(host)  # ready VM half made as pending) every tag followed the name
        status, report = c.call("GET", "/check")
        assert status == 200 and report["ok"], report
        member = vm["tap"].removeprefix("fr-")  # the ready VM's name
        assert len([t for t in tags(host) if t.endswith(":web-1")]) == tagged  # alias, the rest
        assert not [t for t in tags(host) if t.endswith(":" + member)], tags(host)

        # the control: other options go cold (a tap of its own name), beside the claim
        status, cold = c.call("PUT", "/vms/cold-1", {"dns": ["192.0.2.53"]})
        assert status == 200, cold
        assert cold["tap"] == "fr-cold-1" and set(cold) == set(vm)
        assert {k for k in vm if vm[k] is None} == {k for k in cold if cold[k] is None}
        assert c.call("PUT", "/vms/web-1", {}) == (200, vm)  # up again: the no-op, unclaimed

        after = wait_ready(host, 2)  # refilled while idle
        assert vm["tap"] not in {v["tap"] for v in after}
        check_clean(host)

        # the claimed tap's guest reaches the internet, masqueraded out of the uplink
        ns = wired.guest(vm["tap"], vm["mac"])
        sh("ip", "-n", ns, "addr", "add", f"{vm['guest_ip']}/{vm['prefix']}", "dev", "eth0")
        sh("ip", "-n", ns, "route", "add", "default", "via", vm["tap_ip"])
        argv = ["ip", "netns", "exec", host.inet, sys.executable, "-c", SERVER, "203.0.113.1:8080"]
        srv = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
            got = sh("ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, "203.0.113.1", "8080",
                     check=False).stdout.strip()  # fmt: skip
            assert got == "hello 203.0.113.2", got
        finally:
            srv.kill()
            srv.wait()

        assert c.call("DELETE", "/vms/web-1") == (200, {"removed": True})
        status, err = c.call("DELETE", "/vms/_ready-0")  # no client names a ready VM
        assert status == 400 and "invalid vm name" in err["error"]["message"], err
        check_clean(host)
    finally:
        wired.close()
        d.stop()
    assert ready_vms(host) == []  # a stop takes them down
    assert not [n for n in host.links() if n.startswith("fr-_ready-")]
    check_clean(host)


def test_sigkill_then_restart_leaves_no_ready_vm(host: Host, tmp_path: Path):
    d = Daemon(host, tmp_path, config=CONFIG)
    try:
        old = {v["tap"] for v in wait_ready(host, 2)}
        d.proc.kill()  # SIGKILL: nothing of the daemon's runs
        d.proc.wait()
        assert {v["tap"] for v in ready_vms(host)} == old  # left behind, as a kill leaves them
        (tmp_path / "serve.json").write_text(json.dumps({**CONFIG, "ready": 0}))
        d.start()  # a daemon that keeps none: it takes the old ones down all the same
        started = [x for x in d.lines() if x.get("event") == "listening"]
        assert sorted(started[-1]["drained"]) == ["_ready-0", "_ready-1"]
        assert ready_vms(host) == []
        assert not [n for n in host.links() if n.startswith("fr-_ready-")]
        assert not [t for t in tags(host) if ":_ready-" in t], tags(host)
        check_clean(host)
        status, vm = d.client().call("PUT", "/vms/web-2", {})  # cold: none is kept
        assert status == 200 and vm["tap"] == "fr-web-2", vm
    finally:
        d.stop()
