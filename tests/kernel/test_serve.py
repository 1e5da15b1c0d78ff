"""``fireroute serve`` against the kernel: the daemon runs inside the test's host namespace,
clients talk HTTP/1.1 to its unix socket (from this process: a unix socket is not a network
address, so nothing here leaves the machine's own namespaces)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


class Unix(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s

    def call(self, method: str, url: str, body: object = None) -> tuple[int, object]:
        data = body if isinstance(body, bytes) else (json.dumps(body) if body is not None else None)
        self.request(method, url, body=data, headers={"Content-Type": "application/json"})
        r = self.getresponse()
        raw = r.read().decode()
        kind = r.getheader("Content-Type", "")
        return r.status, (json.loads(raw) if kind.startswith("application/json") else raw)


class Daemon:
    def __init__(
        self,
        host: Host,
        tmp: Path,
        config: dict | None = None,
        group: str | None = None,
        sock: str | None = None,
    ) -> None:
        self.host, self.sock = host, sock or str(tmp / "fr.sock")
        self.log = tmp / "serve.log"
        argv = ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-m", "fireroute"]
        argv += ["serve", "--socket", self.sock, "--state", str(host.state)]
        if config is not None:
            (tmp / "serve.json").write_text(json.dumps(config))
            argv += ["--config", str(tmp / "serve.json")]
        if group is not None:
            argv += ["--group", group]
        self.argv = argv
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stderr=self.log.open("a"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.log.read_text()}")
            try:
                if self.client().call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("serve did not come up")

    def client(self) -> Unix:
        return Unix(self.sock)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def lines(self) -> list[dict]:
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]


@pytest.fixture
def daemon(host: Host, tmp_path: Path) -> Iterator[Daemon]:
    from fireroute.serve.config import CLIENT_DEFAULT

    granted = [*CLIENT_DEFAULT, "allow_host_ports", "allow_out"]  # the operator's, allowed here
    config = {"fixed": {"pool": "172.16.0.0/16"}, "client_options": granted}
    d = Daemon(host, tmp_path, config=config)
    try:
        yield d
    finally:
        d.stop()


def check_clean(host: Host) -> None:
    p = host.fireroute("check", "--json", check=False)
    assert p.returncode == 0 and json.loads(p.stdout)["ok"], p.stdout


def test_resources_and_errors(daemon: Daemon, host: Host):
    c = daemon.client()  # one kept-alive connection for every request below
    status, vm = c.call("PUT", "/vms/web-1", {"allow_host_ports": ["22/tcp"]})
    assert status == 200, vm
    assert vm == json.loads(host.fireroute("show", "web-1", "--format", "json").stdout)
    assert c.call("GET", "/vms/web-1") == (200, vm)
    assert c.call("PUT", "/vms/web-1", {"allow_host_ports": ["22/tcp"]}) == (200, vm)  # no-op
    assert c.call("GET", "/vms") == (200, [vm])
    status, report = c.call("GET", "/check")
    assert status == 200 and report["ok"], report
    check_clean(host)
    status, rows = c.call("GET", "/stats")
    assert status == 200 and rows == json.loads(host.fireroute("stats", "--json").stdout)
    assert rows[0]["name"] == "web-1" and rows[0]["counted"] is True
    status, metrics = c.call("GET", "/metrics")
    assert 'fireroute_vm_tx_bytes_total{vm="web-1"} 0' in metrics, metrics
    status, got = c.call("PUT", "/vms/web-1/policy", {"egress": "none"})
    assert status == 200 and got["egress"]["policy"] == "none", got
    assert '"fr-web-1" . 0.0.0.0/0' in host.nft_text()
    for body in ({"table": "x"}, {"frob": 1}, {"name": "x"}):
        status, got = c.call("PUT", "/vms/web-1/policy", body)
        assert status == 400 and "only the egress policy" in got["error"]["message"], got
    status, vm = c.call("PUT", "/vms/web-1/policy", {"egress": "internet"})
    assert status == 200 and vm == json.loads(host.fireroute("show", "web-1", "--json").stdout)

    def error(method: str, url: str, body: object, want: int, kind: str) -> str:
        status, got = c.call(method, url, body)
        assert status == want and got["error"]["kind"] == kind, (method, url, body, got)
        return got["error"]["message"]

    msg = error("PUT", "/vms/web-1", {"allow_host_ports": ["80/tcp"]}, 409, "ConflictError")
    assert "allow-host-port" in msg  # the difference is named, as the CLI names it
    error("PUT", "/vms/web-2", b"{not json", 400, "UsageError")
    error("PUT", "/vms/web-2", b"[1]", 400, "UsageError")
    assert "unknown option" in error("PUT", "/vms/web-2", {"nope": 1}, 400, "UsageError")
    error("PUT", "/vms/web-2", {"dns": "1.1.1.1"}, 400, "UsageError")  # a bad value
    assert "fixed" in error("PUT", "/vms/web-2", {"pool": "10.0.0.0/8"}, 403, "NotAllowed")
    for field in ("uplink", "table", "backend", "owner"):  # the operator's, never a client's
        error("PUT", "/vms/web-2", {field: "x"}, 403, "NotAllowed")
    error("PUT", "/vms/bad%20name", {}, 400, "UsageError")
    error("GET", "/vms/nope", None, 404, "NotFound")
    error("GET", "/nothing", None, 404, "NotFound")
    big = socket.socket(socket.AF_UNIX)  # a too-large body: refused before it is read
    big.connect(daemon.sock)
    big.sendall(b"PUT /vms/web-2 HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
    answer = big.makefile("rb").read().decode()  # and the connection is closed
    assert answer.startswith("HTTP/1.1 413") and '"TooLarge"' in answer, answer
    assert c.call("GET", "/healthz") == (200, {"ok": True})
    assert not [n for n in host.links() if n == "fr-web-2"]  # nothing of the refusals made

    assert c.call("DELETE", "/vms/web-1") == (200, {"removed": True})
    assert c.call("DELETE", "/vms/web-1") == (200, {"removed": False})  # idempotent
    error("GET", "/vms/web-1", None, 404, "NotFound")
    status, metrics = c.call("GET", "/metrics")
    assert status == 200 and 'fireroute_requests_total{verb="up",status="200"} 2' in metrics
    assert "fireroute_vms 0" in metrics
    logged = [x for x in daemon.lines() if x.get("verb") == "up"]
    assert logged and all({"uid", "vm", "status", "ms"} <= set(x) for x in logged)
    assert logged[0]["uid"] == 0 and logged[0]["vm"] == "web-1"
    assert not [n for n in host.links() if n.startswith("fr-")]


def test_bad_requests_never_stop_the_worker(daemon: Daemon, host: Host):
    """Found by review: an unknown key reached up_many as a keyword and killed the worker."""
    results: list[int] = []

    def bad(i: int) -> None:
        results.append(daemon.client().call("PUT", f"/vms/k{i}", {"names": ["q"]})[0])

    threads = [threading.Thread(target=bad, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [400] * 24, results
    c = daemon.client()
    assert c.call("GET", "/healthz") == (200, {"ok": True})
    assert c.call("PUT", "/vms/after", {})[0] == 200  # the worker still works


def test_malformed_http_is_refused_and_the_connection_closed(daemon: Daemon, host: Host):
    def raw(data: bytes) -> str:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(daemon.sock)
        s.sendall(data)
        out = s.makefile("rb").read().decode()  # read to the end: the server closed it
        s.close()
        return out

    body = b'{"egress": "none"}'
    got = raw(b"PUT /vms/a1 HTTP/1.1\r\nHost: x\r\nContent-Length: +18\r\n\r\n" + body)
    assert got.startswith("HTTP/1.1 400") and "Content-Length" in got, got
    chunked = b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    got = raw(b"PUT /vms/a1 HTTP/1.1\r\nHost: x\r\n" + chunked)
    assert got.startswith("HTTP/1.1 411") and got.count("HTTP/1.1") == 1, got
    assert "fr-a1" not in host.links()  # neither made a VM with defaults
    c = daemon.client()
    assert c.call("GET", '/x"y')[0] == 404
    metrics = c.call("GET", "/metrics")[1]
    assert 'x"y' not in metrics and 'verb="unknown",status="404"' in metrics, metrics


def test_daemon_and_cli_together_64_clients(daemon: Daemon, host: Host):
    """48 daemon clients and 16 CLI processes on one state file at once; then the state file
    and the kernel agree, and each VM exists exactly when its last call was an up."""
    errors: list[object] = []
    want: set[str] = set()
    lock = threading.Lock()

    def api_client(i: int) -> None:
        try:
            c = daemon.client()
            for k in range(3):
                name = f"d{i}-{k}"
                status, got = c.call("PUT", f"/vms/{name}", {})
                assert status == 200, got
                if k == 1:
                    assert c.call("DELETE", f"/vms/{name}") == (200, {"removed": True})
                else:
                    with lock:
                        want.add(name)
        except Exception as exc:  # noqa: BLE001 - collected, asserted below
            errors.append(exc)

    def cli_client(i: int) -> None:
        p = host.fireroute("up", f"c{i}", check=False)
        if p.returncode != 0:
            errors.append(p.stderr)
        with lock:
            want.add(f"c{i}")

    threads = [threading.Thread(target=api_client, args=(i,)) for i in range(48)]
    threads += [threading.Thread(target=cli_client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    names = {v["name"] for v in json.loads(host.fireroute("ls", "--json").stdout)}
    assert names == want
    status, vms = daemon.client().call("GET", "/vms")
    assert status == 200 and {v["name"] for v in vms} == want
    check_clean(host)


def test_kill_9_mid_burst_then_restart_is_consistent(daemon: Daemon, host: Host):
    stop = threading.Event()

    def burst(i: int) -> None:
        try:
            c = daemon.client()
            k = 0
            while not stop.is_set():
                c.call("PUT", f"/vms/k{i}-{k}", {})
                k += 1
        except (OSError, http.client.HTTPException):
            return  # the daemon died under it

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30  # (some VMs made first, however busy the machine)
    while not any(n.startswith("fr-k") for n in host.links()):
        assert time.monotonic() < deadline, "the burst made no VM"
        time.sleep(0.05)
    time.sleep(0.5)
    daemon.proc.kill()  # SIGKILL, mid-burst
    daemon.proc.wait()
    stop.set()
    for t in threads:
        t.join(30)
    daemon.start()  # its start-up gc finishes or undoes what was half-made
    started = [x for x in daemon.lines() if x.get("event") == "listening"]
    assert len(started) == 2
    check_clean(host)
    status, vms = daemon.client().call("GET", "/vms")
    assert status == 200 and all(v["state"] == "active" for v in vms)
    assert len(vms) > 0  # the burst made some before it was killed
    tapped = {n for n in host.links() if n.startswith("fr-k")}
    assert tapped == {v["host_dev"] for v in vms}


def test_socket_is_for_root_and_the_group_only(host: Host, tmp_path: Path):
    """0660 root:GROUP: a process of another uid outside the group is refused by the kernel
    (EACCES at connect); one in the group gets in; with tenant prefixes it may only name its
    own VMs."""
    import shutil
    import tempfile

    where = tempfile.mkdtemp(prefix="frserve-", dir="/tmp")  # (pytest's tmp is root's alone)
    os.chmod(where, 0o755)
    gid = 4242
    name = "frtest" + os.urandom(3).hex()
    subprocess.run(["groupadd", "-g", str(gid), name], check=True)
    d = None
    try:
        d = Daemon(host, tmp_path, {"tenant_prefix": True}, name, f"{where}/fr.sock")
        st = os.stat(d.sock)
        assert oct(st.st_mode & 0o777) == "0o660" and (st.st_uid, st.st_gid) == (0, gid)
        probe = (
            "import http.client, json, socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\n"
            "except PermissionError:\n    print('EACCES'); sys.exit(0)\n"
            "c = http.client.HTTPConnection('localhost'); c.sock = s\n"
            "for url in sys.argv[2:]:\n"
            "    method, _, url = url.rpartition(' ')\n"
            "    c.request(method or 'PUT', url, body='{}'); r = c.getresponse()\n"
            "    got = json.loads(r.read())\n"
            "    if url == '/check':\n"
            "        print(r.status, sorted(got['vms']), 'shared' in got); continue\n"
            "    print(r.status, got['error']['kind'] if r.status != 200 else '')\n"
        )

        def as_user(groups: str, *urls: str) -> list[str]:
            # (a unix socket is reached by its path: no network namespace is involved)
            argv = ["setpriv", "--reuid", "65534", "--regid", "65534", "--groups", groups]
            argv += [sys.executable, "-c", probe, d.sock, *urls]
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert p.returncode == 0, p.stderr
            return p.stdout.split("\n")[:-1]

        assert as_user("65534", "/vms/u65534-a") == ["EACCES"]  # not in the group
        got = as_user(str(gid), "/vms/other", "/vms/u65534-a")  # in the group: let in
        assert got == ["403 NotAllowed", "200 "], got
        assert "fr-u65534-a" in host.links() and "fr-other" not in host.links()
        host.fireroute("up", "other")  # root's VM, beside the tenant's
        assert as_user(str(gid), "GET /check") == ["200 ['u65534-a'] False"]  # its own only
        status, report = d.client().call("GET", "/check")  # root sees everything
        assert status == 200 and sorted(report["vms"]) == ["other", "u65534-a"]
    finally:
        if d is not None:
            d.stop()
        subprocess.run(["groupdel", name], check=False)
        shutil.rmtree(where, ignore_errors=True)


def test_slow_client_does_not_hold_up_others(host: Host, tmp_path: Path):
    d = Daemon(host, tmp_path, config={"client_timeout": 5})
    try:
        slow = socket.socket(socket.AF_UNIX)
        slow.connect(d.sock)
        slow.sendall(
            b"PUT /vms/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )  # and stalls
        t0 = time.monotonic()
        assert d.client().call("GET", "/healthz") == (200, {"ok": True})
        assert d.client().call("PUT", "/vms/fast", {})[0] == 200
        assert time.monotonic() - t0 < 4  # not behind the slow one (its 5 s)
        slow.settimeout(15)
        assert slow.recv(100).startswith(b"HTTP/1.1 408")  # after 5 s the server gives up
        assert "fr-slow" not in host.links()  # and nothing of its half request was made
    finally:
        d.stop()


def slow_send(sock: socket.socket, data: bytes, gap: float) -> None:
    """``data`` a byte at a time, ``gap`` seconds apart, until the server stops reading."""
    for b in data:
        try:
            sock.sendall(bytes([b]))
        except OSError:
            return
        time.sleep(gap)


@pytest.mark.parametrize("part", ["line", "headers", "body"])
def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_its_deadline(
    host: Host, tmp_path: Path, part: str
):
    """Each byte comes well within client_timeout, so only the whole-request deadline ends
    it: 408 after request_timeout, nothing of it run, the daemon serving others meanwhile."""
    d = Daemon(host, tmp_path, config={"client_timeout": 1, "request_timeout": 2})
    try:
        slow = socket.socket(socket.AF_UNIX)
        slow.settimeout(10)
        slow.connect(d.sock)
        head = b"PUT /vms/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 41\r\n"
        t0 = time.monotonic()
        pad = b"X-Pad: " * 40
        if part == "line":  # a byte every 0.3 s: cut in its request line
            sender = threading.Thread(target=slow_send, args=(slow, head + pad, 0.3))
        elif part == "headers":
            slow.sendall(head)
            sender = threading.Thread(target=slow_send, args=(slow, pad, 0.3))
        else:
            slow.sendall(head + b"\r\n")
            sender = threading.Thread(target=slow_send, args=(slow, b"{" + b" " * 40, 0.3))
        sender.start()
        assert d.client().call("GET", "/healthz") == (200, {"ok": True})  # others go on
        got = slow.makefile("rb").read().decode()  # to the end: the server closed it
        took = time.monotonic() - t0
        sender.join()
        assert got.startswith("HTTP/1.1 408") and '"kind": "Timeout"' in got, got
        assert 1.9 < took < 6, took  # at the deadline, not when the bytes ran out (>= 12 s)
        assert "fr-slow" not in host.links()
        assert d.client().call("PUT", "/vms/fast", {})[0] == 200  # the positive control
    finally:
        d.stop()


def test_connections_beyond_max_connections_get_503_at_once(host: Host, tmp_path: Path):
    d = Daemon(host, tmp_path, config={"max_connections": 3})
    held = []
    try:
        for _ in range(3):  # idle kept-alive clients: each holds a thread
            c = d.client()
            assert c.call("GET", "/healthz")[0] == 200
            held.append(c)
        for _ in range(20):  # each reads its answer (none gets a broken pipe instead)
            t0 = time.monotonic()
            status, body = d.client().call("GET", "/healthz")
            assert status == 503 and body["error"]["kind"] == "Busy", body  # type: ignore[index]
            assert "max_connections" in body["error"]["message"]  # type: ignore[index]
            assert time.monotonic() - t0 < 3  # (at once: not after a client timeout, 10 s)
        held.pop().close()
        deadline = time.monotonic() + 5  # the server notices the close at its next read
        while d.client().call("GET", "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "a freed connection was not given back"
            time.sleep(0.05)
        assert held[0].call("GET", "/vms")[0] == 200  # the held ones still work
    finally:
        for c in held:
            c.close()
        d.stop()


def test_server_config_timeouts_and_cap_are_checked(tmp_path: Path):
    from fireroute.errors import UsageError
    from fireroute.serve.config import ServerConfig

    for bad in (
        {"request_timeout": 0},
        {"request_timeout": "5"},
        {"max_connections": 0},
        {"max_connections": True},
        {"max_connections": 1.5},
        {"client_timeout": True},
        {"client_options": "mode"},  # a string, not a list of names
        {"client_options": ["frob"]},
        {"fixed": ["pool"]},
        {"fixed": {"mode": "bridge"}, "client_options": ["mode"]},  # both
    ):
        with pytest.raises(UsageError):
            ServerConfig(**bad)  # type: ignore[arg-type]
    ok = ServerConfig(request_timeout=5, max_connections=10)  # the control
    assert (ok.request_timeout, ok.max_connections) == (5, 10)
