"""``fireroute serve`` at its edges (issue 21): what a tenant may ask for, the order of calls
on one VM, HTTP framing and JSON bodies. Each refusal beside the same request that works."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fireroute import request
from fireroute.serve.config import CLIENT_DEFAULT
from tests.conftest import Host
from tests.kernel.test_serve import Daemon, check_clean

pytestmark = pytest.mark.privileged

OPERATORS = {  # the operator's by default, each with a value it could well take
    "mode": "bridge",
    "guest_ip": "192.168.1.169/24",
    "range": "192.168.1.160-192.168.1.199",
    "gateway": "192.168.1.1",
    "dhcp": True,
    "clone_address": "203.0.113.2",
    "bridge": "br0",
    "bridge_address": "192.168.1.7/24",
    "masquerade": True,
    "tap": "fr-mine",
    "mac": "06:00:c0:a8:01:01",
    "pool": "10.9.0.0/16",
    "block_size": 29,
    "uplink": "up0",
    "table": "other",
    "backend": "iptables",
    "owner": "1000",
    "fix_forward_policy": True,
    "mtu": 1400,
    "allow_host_ports": ["22/tcp"],
    "allow_metadata": True,
    "allow_peers": True,
    "allow_out": ["10.0.0.0/8"],
    "publish": ["8080:80"],
    "netns": "/var/run/netns/x",
    "container": "c1",
    "ifname": "eth0",
    "network": "n1",
    "ipv6": True,  # (issue 24, step 7 of docs/ipv6-plan.md: to be a client's)
    "pool6": "fd3c:9a1e:52b0::/48",
    "prefix6": 96,
    "proxy_ndp": True,
}
TENANTS = {  # a client's by default
    "guest_iface": "eth1",
    "iface_id": "net1",
    "dns": ["192.0.2.53"],
    "egress": "public",
    "deny_out": ["10.0.0.0/8"],
}


def test_every_option_is_classified():
    """A new option is the operator's until someone decides otherwise, here and in config."""
    assert set(OPERATORS) | set(TENANTS) == set(request.FIELDS)
    assert set(CLIENT_DEFAULT) == set(TENANTS)


def state_of(host: Host) -> tuple[list[str], list[str]]:
    vms = json.loads(host.fireroute("ls", "--json").stdout)
    return sorted(v["name"] for v in vms), sorted(n for n in host.links() if n.startswith("fr"))


def test_a_tenant_sets_no_mode_address_or_opening_by_default(host: Host, tmp_path: Path):
    d = Daemon(host, tmp_path)  # no config at all: the defaults
    try:
        c = d.client()
        assert c.call("PUT", "/vms/keep", {})[0] == 200
        before = state_of(host)
        for option, value in OPERATORS.items():
            status, got = c.call("PUT", "/vms/t1", {"dns": ["192.0.2.53"], option: value})
            assert status == 403 and got["error"]["kind"] == "NotAllowed", (option, got)
            assert f'"{option}"' in got["error"]["message"], got
            assert state_of(host) == before, option  # nothing changed
            status, vm = c.call("PUT", "/vms/t1", {"dns": ["192.0.2.53"]})  # the control
            assert status == 200 and vm["dns"] == ["192.0.2.53"], (option, vm)
            assert c.call("DELETE", "/vms/t1") == (200, {"removed": True})
        for option, value in TENANTS.items():  # a tenant's own: each works
            status, vm = c.call("PUT", "/vms/t2", {option: value})
            assert status == 200, (option, vm)
            assert c.call("DELETE", "/vms/t2") == (200, {"removed": True})
        status, got = c.call("PUT", "/vms/keep/policy", {"allow_out": ["10.0.0.0/8"]})
        assert status == 403 and '"allow_out"' in got["error"]["message"], got
        # any policy change can widen (a new policy replaces the old): "public" would undo a
        # "none" the operator gave; the grant's positive control is test_serve.py's daemon
        assert c.call("PUT", "/vms/t3", {"egress": "none"})[0] == 200
        for body in ({"egress": "public"}, {"deny_out": []}, {"egress": "none"}):
            status, got = c.call("PUT", "/vms/t3/policy", body)
            assert status == 403 and '"allow_out"' in got["error"]["message"], (body, got)
        status, got = c.call("GET", "/vms/t3")
        assert status == 200 and got["egress"]["policy"] == "none", got
        check_clean(host)
    finally:
        d.stop()


def test_the_operator_grants_and_fixes_options(host: Host, tmp_path: Path):
    granted = [*CLIENT_DEFAULT, "mode", "mac", "allow_host_ports"]
    d = Daemon(host, tmp_path, {"client_options": granted, "fixed": {"pool": "10.9.0.0/16"}})
    try:
        c = d.client()
        status, vm = c.call("PUT", "/vms/g1", {"mac": "06:00:0a:09:00:99", "mode": "nat"})
        assert status == 200 and vm["mac"].lower() == "06:00:0a:09:00:99", vm
        assert vm["guest_ip"].startswith("10.9."), vm  # the fixed pool
        status, vm = c.call("PUT", "/vms/g2", {"mode": "clone"})
        assert status == 200 and vm["mode"] == "clone", vm
        status, got = c.call("PUT", "/vms/g3", {"pool": "10.8.0.0/16"})
        assert status == 403 and "fixed" in got["error"]["message"], got
        status, got = c.call("PUT", "/vms/g3", {"gateway": "10.9.0.1"})  # still the operator's
        assert status == 403 and '"gateway"' in got["error"]["message"], got
        assert "fr-g3" not in host.links()
        for name in ("g1", "g2"):
            assert c.call("DELETE", f"/vms/{name}")[0] == 200
    finally:
        d.stop()


PROBE = """
import http.client, json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
c = http.client.HTTPConnection("localhost"); c.sock = s
for body in sys.argv[2:]:
    c.request("PUT", "/vms/u65534-a", body=body); r = c.getresponse()
    got = json.loads(r.read())
    print(r.status, got["error"]["message"] if r.status != 200 else "")
"""


def test_a_non_root_tenant_is_held_to_the_same_defaults(host: Host, tmp_path: Path):
    where = tempfile.mkdtemp(prefix="frserve-", dir="/tmp")  # (pytest's tmp is root's alone)
    os.chmod(where, 0o755)
    gid, name = 4243, "frtest" + os.urandom(3).hex()
    subprocess.run(["groupadd", "-g", str(gid), name], check=True)
    d = None
    try:
        d = Daemon(host, tmp_path, {"tenant_prefix": True}, name, f"{where}/fr.sock")
        argv = ["setpriv", "--reuid", "65534", "--regid", "65534", "--groups", str(gid)]
        bodies = ['{"mode": "bridge", "dhcp": true}', '{"guest_ip": "203.0.113.1/24"}', "{}"]
        p = subprocess.run(
            [*argv, sys.executable, "-c", PROBE, d.sock, *bodies],
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines = p.stdout.splitlines()
        assert p.returncode == 0 and len(lines) == 3, p.stderr
        assert lines[0].startswith('403 option "mode"') or lines[0].startswith('403 option "dhcp"')
        assert lines[1].startswith('403 option "guest_ip"')
        assert lines[2] == "200 "  # the control
    finally:
        if d is not None:
            d.stop()
        subprocess.run(["groupdel", name], check=False)
        shutil.rmtree(where, ignore_errors=True)


# -- order ----------------------------------------------------------------------------------
TOLD = """
import queue, sys
from fireroute.entry import main
from fireroute.serve import worker

def say(what, call):
    if call is not None:  # (None: the stop)
        sys.stderr.write(f"{what} {call.verb} {call.name}\\n"); sys.stderr.flush()

class Told(queue.SimpleQueue):
    def put(self, item, block=True, timeout=None):
        super().put(item, block, timeout); say("queued", item)
    def get(self, block=True, timeout=None):
        item = super().get(block, timeout); say("took", item); return item
    def get_nowait(self):
        return self.get(False)

made = worker.Worker.__init__
def init(self, *args, **kwargs):
    made(self, *args, **kwargs)
    self.calls = Told()
worker.Worker.__init__ = init
raise SystemExit(main(sys.argv[1:]))
"""
"""``fireroute serve`` whose worker's queue says in the log (stderr) each call it is handed
(``queued VERB NAME``) and each the worker takes (``took VERB NAME``): the order of arrival,
seen from outside. The queue is the daemon's own, only telling."""


class ToldDaemon(Daemon):
    """The daemon run as :data:`TOLD` (its arguments as ever)."""

    def start(self) -> None:
        if "-m" in self.argv:
            i = self.argv.index("-m")
            self.argv[i : i + 2] = ["-c", TOLD]
        super().start()

    def told(self, what: str) -> list[str]:
        """The calls the queue was handed (``queued``) or the worker took (``took``), in
        order, as ``VERB NAME``; the start's own (gc, ready-drain) left out."""
        lines = [x.split(" ", 1) for x in self.log.read_text().splitlines()]
        calls = [x[1] for x in lines if x[0] == what and len(x) == 2]
        return [c for c in calls if c.split()[0] not in ("gc", "ready-drain")]


def until(done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"the daemon never {what}"
        time.sleep(0.01)


class Queued:
    """Requests sent one after the other from threads of their own (a connection each), the
    next only once the daemon's worker queue holds the one before (it says so in its log):
    arrival order is known."""

    def __init__(self, d: ToldDaemon) -> None:
        self.d = d
        self.answers: list[tuple[int, object]] = []
        self.threads: list[threading.Thread] = []
        self.before = len(d.told("queued"))  # (the calls before these)

    def send(self, method: str, url: str, body: object = None) -> None:
        i = len(self.threads)
        self.answers.append((0, None))
        c = self.d.client()
        c.connect()

        def call() -> None:
            data = json.dumps(body) if body is not None else None
            c.request(method, url, body=data)
            r = c.getresponse()
            self.answers[i] = (r.status, json.loads(r.read()))

        t = threading.Thread(target=call)
        t.start()
        self.threads.append(t)
        n = self.before + i + 1
        until(lambda: len(self.d.told("queued")) >= n, f"queued {method} {url}")

    def busy(self) -> None:
        """Wait until the worker took every call queued so far (the first: it waits in it)."""
        n = len(self.d.told("queued"))
        until(lambda: len(self.d.told("took")) >= n, "took the calls queued")

    def wait(self) -> list[tuple[int, object]]:
        for t in self.threads:
            t.join(60)
        return self.answers


def held(host: Host):  # noqa: ANN201
    from fireroute.state.store import Store

    return Store(host.state, create=False).locked(timeout=5)


def test_calls_on_one_vm_run_in_arrival_order(host: Host, tmp_path: Path):
    """Issue 21 item 6: DELETE, PUT, DELETE of one VM behind a busy state lock were all
    answered 200, the last {"removed": true}, and the VM was up afterwards."""
    d = ToldDaemon(host, tmp_path)
    try:
        assert d.client().call("PUT", "/vms/a", {})[0] == 200
        q = Queued(d)
        with held(host):
            q.send("PUT", "/vms/blocker", {})  # the worker waits in it for the lock
            q.busy()
            q.send("DELETE", "/vms/a")
            q.send("PUT", "/vms/a", {})
            q.send("DELETE", "/vms/a")
        got = q.wait()
        assert [s for s, _ in got] == [200, 200, 200, 200], got
        assert got[1][1] == {"removed": True} and got[3][1] == {"removed": True}
        assert got[2][1]["name"] == "a"  # type: ignore[index]
        assert d.client().call("GET", "/vms/a")[0] == 404  # the last call was a DELETE
        assert "fr-a" not in host.links()
        check_clean(host)
    finally:
        d.stop()


def test_calls_on_different_vms_still_run_together(host: Host, tmp_path: Path):
    """The control: DELETEs of four VMs queued behind the lock are one batch (the request
    log says how many calls ran together), and so are PUTs of three with equal options."""
    d = ToldDaemon(host, tmp_path)
    try:
        for i in range(4):
            assert d.client().call("PUT", f"/vms/x{i}", {})[0] == 200
        q = Queued(d)
        with held(host):
            q.send("PUT", "/vms/blocker", {})
            q.busy()
            for i in range(4):
                q.send("DELETE", f"/vms/x{i}")
            for i in range(3):
                q.send("PUT", f"/vms/y{i}", {})
        got = q.wait()
        assert all(s == 200 for s, _ in got), got
        assert [b for _, b in got[1:5]] == [{"removed": True}] * 4
        logged = {x["vm"]: x.get("batch") for x in d.lines() if x.get("status") == 200}
        assert [logged[f"x{i}"] for i in range(4)] == [4, 4, 4, 4], logged
        assert [logged[f"y{i}"] for i in range(3)] == [3, 3, 3], logged
        check_clean(host)
    finally:
        d.stop()


# -- framing --------------------------------------------------------------------------------
BODY = b'{"egress": "none"}'
HEAD = b"PUT /vms/a1 HTTP/1.1\r\nHost: x\r\n"


def raw(d: Daemon, data: bytes) -> str:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(d.sock)
    s.sendall(data)
    out = s.makefile("rb").read().decode("latin-1")  # to the end: the server closed it
    s.close()
    return out


FRAMING = {  # issue 21 item 9 and the class it belongs to: each is refused, nothing runs
    "two Content-Length": HEAD + b"Content-Length: 0\r\nContent-Length: 18\r\n\r\n" + BODY,
    "repeated Content-Length": HEAD + b"Content-Length: 18\r\nContent-Length: 18\r\n\r\n" + BODY,
    "a list as Content-Length": HEAD + b"Content-Length: 18, 18\r\n\r\n" + BODY,
    "Transfer-Encoding and Content-Length": HEAD
    + b"Transfer-Encoding: chunked\r\nContent-Length: 18\r\n\r\n12\r\n"
    + BODY
    + b"\r\n0\r\n\r\n",
    "Transfer-Encoding not ending in chunked": HEAD
    + b"Transfer-Encoding: gzip\r\nContent-Length: 18\r\n\r\n"
    + BODY,
    "obs-fold": HEAD + b"X-A: a\r\n b\r\nContent-Length: 18\r\n\r\n" + BODY,
    "whitespace before a colon": HEAD + b"Content-Length : 18\r\n\r\n" + BODY,
    "a bare CR": HEAD + b"X-A: a\rContent-Length: 18\r\n\r\n" + BODY,
    "a NUL in a value": HEAD + b"X-A: a\x00\r\nContent-Length: 18\r\n\r\n" + BODY,
    "an invalid name": HEAD + b"X[A]: a\r\nContent-Length: 18\r\n\r\n" + BODY,
    "a line without a colon": HEAD + b"garbage\r\nContent-Length: 18\r\n\r\n" + BODY,
    "two Hosts": HEAD + b"Host: y\r\nContent-Length: 18\r\n\r\n" + BODY,
    "no Host": b"PUT /vms/a1 HTTP/1.1\r\nContent-Length: 18\r\n\r\n" + BODY,
    "two spaces in the request line": b"PUT  /vms/a1 HTTP/1.1\r\nHost: x\r\n"
    + b"Content-Length: 18\r\n\r\n"
    + BODY,
    "a lowercase version": b"PUT /vms/a1 http/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\n" + BODY,
}


@pytest.mark.parametrize("case", list(FRAMING))
def test_malformed_framing_is_400_and_nothing_runs(host: Host, tmp_path: Path, case: str):
    d = Daemon(host, tmp_path)
    try:
        then = b"GET /vms HTTP/1.1\r\nHost: x\r\n\r\n"  # pipelined behind it: never run
        got = raw(d, FRAMING[case] + then)
        assert got.startswith("HTTP/1.1 400 "), (case, got)
        assert "\nHTTP/1." not in got and "Connection: close" in got, got  # one answer
        error = json.loads(got.split("\r\n\r\n", 1)[1])["error"]
        assert error["kind"] == "BadRequest" and error["message"], error
        assert "fr-a1" not in host.links()
        assert d.client().call("GET", "/vms") == (200, [])  # nothing ran, the daemon is up
        good = HEAD + b"Content-Length: 18\r\nConnection: close\r\n\r\n" + BODY  # the control
        got = raw(d, good)
        assert got.startswith("HTTP/1.1 200 ") and '"policy": "none"' in got, got
        assert "fr-a1" in host.links()
    finally:
        d.stop()


def test_keep_alive_and_pipelining_still_work(host: Host, tmp_path: Path):
    d = Daemon(host, tmp_path)
    try:
        three = (
            (HEAD + b"Content-Length: 18\r\n\r\n" + BODY)
            + (b"GET /vms/a1 HTTP/1.1\r\nHost: x\r\n\r\n")
            + b"DELETE /vms/a1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        got = raw(d, three)
        assert got.count("HTTP/1.1 200 ") == 3, got
        assert got.rstrip().endswith('{"removed": true}'), got
    finally:
        d.stop()


# -- JSON -----------------------------------------------------------------------------------
BAD_JSON = [
    b"[" * 60000,
    b'{"dns": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"dns": NaN}',
    b'{"egress": Infinity}',
    b'{"dns": [1e999]}',
    b'{"dns": ' + b"1" * 4500 + b"}",
    b'{"egress": "none", "egress": "internet"}',
    b'{"egress": "\\ud800"}',
    b'{"dns": "192.0.2.1"}',
    b'{"dns": [1]}',
    b'{"egress": ["none"]}',
    b'{"egress": {"a": 1}}',
    b'{"egress": true}',
    b'{"iface_id": null, "guest_iface": 5}',
    b'{"egress": "none"',
    b"\xff\xfe",
    b"[]",
]


def test_bad_json_of_any_shape_is_400(host: Host, tmp_path: Path):
    d = Daemon(host, tmp_path, {"client_options": [*CLIENT_DEFAULT, "allow_out"]})
    try:
        c = d.client()
        assert c.call("PUT", "/vms/j0", {})[0] == 200  # (a policy is changed on a VM that is up)
        for body in BAD_JSON:
            for url in ("/vms/j1", "/vms/j0/policy"):
                status, got = c.call("PUT", url, body)
                assert status == 400, (body[:60], got)
                assert isinstance(got, dict) and "\n" not in got["error"]["message"], got
        assert "fr-j1" not in host.links()
        assert c.call("PUT", "/vms/j1", b'{"egress": "none"}')[0] == 200  # the controls
        assert c.call("PUT", "/vms/j0/policy", b'{"egress": "none"}')[0] == 200
        assert all(x.get("status", 200) < 500 for x in d.lines()), d.lines()
        assert "Traceback" not in d.log.read_text()
    finally:
        d.stop()
