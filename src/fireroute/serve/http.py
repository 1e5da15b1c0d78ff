"""The daemon's HTTP side: a unix socket, one thread per connection, JSON in and out.

Resources::

    PUT    /vms/{name}   body: the options of ``up`` (JSON object)   200: the VM
    GET    /vms          200: [VM, ...]        GET /vms/{name}   200: the VM
    DELETE /vms/{name}   200: {"removed": bool} (idempotent)
    PUT    /vms/{name}/policy   body: egress, allow_out, deny_out     200: the VM
    POST   /vms/{name}/attach   body: socket (a name in the server's firecracker_dir, the
                         client's own) and attach's settings   200: what was sent
    GET    /check        200: what ``check --json`` prints (its "ok" says whether all is well)
    GET    /stats        200: per-VM traffic, as ``stats --json`` prints it
    GET    /healthz      200: {"ok": true}
    GET    /metrics      200: Prometheus text (requests, and per-VM traffic)
    POST   /cni          body: env (the CNI_* variables), stdin (the network configuration)
                         200: {"code", "output"}: the plugin's exit status and what it prints
                         (root's clients only: fireroute/handoff.py)

A VM is the JSON of ``show --format json``; with ``?record=1``, plus its ``record`` (the VM as
the state file keeps it, from which the CLI prints it: fireroute/handoff.py). Errors:
``{"error": {"kind", "message"}}`` with 400 (bad input: bad framing (framing.py), bad JSON
(body.py), unknown option, bad value), 403 (not allowed by the server), 404, 405, 408 (too
slow), 409 (a conflict), 411 (a chunked body), 413 (body too large), 431 (headers too large),
501 (a method the daemon has no verb for), 505 (not HTTP/1.x), 503 (busy), 500 (the kernel
refused). The message is the line the CLI would print.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

from fireroute import jsontext
from fireroute.api import Vm
from fireroute.errors import (
    Busy,
    ConflictError,
    FirecrackerFailed,
    FirerouteError,
    NotFound,
    PermissionDenied,
    PoolExhausted,
    UsageError,
)
from fireroute.model import check_vm_name
from fireroute.serve import body, framing
from fireroute.serve.config import NotAllowed, ServerConfig
from fireroute.serve.framing import Reply
from fireroute.serve.worker import Call, Worker, now_ms

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from fireroute.serve.ra import Advertiser

    T = TypeVar("T")

STATUS = (  # most specific first
    (NotAllowed, 403),
    (FirecrackerFailed, 502),  # the VMM refused or could not be reached
    (UsageError, 400),
    (NotFound, 404),
    (PoolExhausted, 409),
    (ConflictError, 409),
    (Busy, 503),
    (PermissionDenied, 500),
)


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.seconds: dict[str, float] = {}

    def add(self, verb: str, status: int, ms: float) -> None:
        with self.lock:
            self.requests[(verb, status)] = self.requests.get((verb, status), 0) + 1
            self.seconds[verb] = self.seconds.get(verb, 0.0) + ms / 1000

    def text(self, vms: int) -> str:
        with self.lock:
            lines = [
                "# HELP fireroute_vms VMs in the state file.",
                "# TYPE fireroute_vms gauge",
                f"fireroute_vms {vms}",
                "# HELP fireroute_requests_total Requests answered, by verb and status.",
                "# TYPE fireroute_requests_total counter",
            ]
            lines += [
                f'fireroute_requests_total{{verb="{v}",status="{s}"}} {n}'
                for (v, s), n in sorted(self.requests.items())
            ]
            lines += [
                "# HELP fireroute_request_seconds_total Time spent answering, by verb.",
                "# TYPE fireroute_request_seconds_total counter",
            ]
            lines += [
                f'fireroute_request_seconds_total{{verb="{v}"}} {t:.6f}'
                for v, t in sorted(self.seconds.items())
            ]
        return "\n".join(lines) + "\n"


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


LATE = "the request did not arrive whole in time"  # (request_timeout: the watchdog cut it)


class Watchdog:
    """Cuts off connections whose request has not arrived whole by its deadline: the socket
    timeout bounds each wait for the next bytes, not a request sent a byte at a time. One
    thread for all connections; a cut shuts the connection's reading side, so the read in
    progress ends and the handler answers 408 (or, mid-headers, closes)."""

    LINGER = 1.0  # seconds a refused connection stays open, its answer sent
    MAX_LINGERING = 1024

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.due: dict[Handler, float] = {}
        self.lingering: list[tuple[float, socket.socket]] = []
        threading.Thread(target=self._run, name="fireroute-watchdog", daemon=True).start()

    def close_later(self, sock: socket.socket) -> None:
        """Close a refused connection in a moment, not at once: a client that sends its
        request after the answer was written would otherwise get a broken pipe instead of
        reading the 503 (its request goes into a buffer nobody reads)."""
        with self.lock:
            self.lingering.append((time.monotonic() + self.LINGER, sock))
            early = self.lingering[: max(0, len(self.lingering) - self.MAX_LINGERING)]
            del self.lingering[: len(early)]
        for _, old in early:
            old.close()

    def arm(self, handler: Handler, seconds: float) -> None:
        with self.lock:
            self.due[handler] = time.monotonic() + seconds

    def disarm(self, handler: Handler) -> None:
        with self.lock:
            self.due.pop(handler, None)

    def _run(self) -> None:
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            with self.lock:
                late = [h for h, t in self.due.items() if t <= now]
                for h in late:
                    del self.due[h]
                done = [s for t, s in self.lingering if t <= now]
                self.lingering = [(t, s) for t, s in self.lingering if t > now]
            for h in late:
                h.cut()
            for sock in done:
                sock.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections are kept alive
    server: Server
    raw_requestline: bytes  # (the library's, read by its handle_one_request)
    late = False  # the watchdog cut this request off
    request_body: dict[str, object] = {}  # noqa: RUF012 - set per request, never changed
    with_record = False  # ?record=1: a VM's answer carries its record (handoff.py)
    length = 0  # the body's, from framing.body_length
    batch = 0  # how many calls the worker ran together with this request's last one
    expects_continue = False
    linger = False  # refused and closed: what the client sent after is read and dropped
    LINGER = 1.0  # seconds, at most

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.config.client_timeout)  # a slow client: closed
        self.uid = peer_uid(self.connection)

    def handle_one_request(self) -> None:
        """One request, under the whole-request deadline (``request_timeout``) from the
        moment the server waits for it until it has arrived (headers, and body if any)."""
        self.server.watchdog.arm(self, self.server.config.request_timeout)
        try:
            super().handle_one_request()
        finally:
            self.server.watchdog.disarm(self)

    def finish(self) -> None:
        """A connection closed after a refusal is half-closed first and what the client
        still sends is read and dropped for a moment (RFC 9112 9.6): closed with unread
        bytes, the kernel would reset it, and the client could lose the answer."""
        super().finish()
        if not self.linger:
            return
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + self.LINGER
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(65536):
                    break

    def cut(self) -> None:
        self.late = True
        with contextlib.suppress(OSError):  # (the client may have gone already)
            self.connection.shutdown(socket.SHUT_RD)

    def parse_request(self) -> bool:
        """The library's parse, held to RFC 9112 (framing.py): refused, nothing runs and the
        connection is closed. ``100 Continue`` only for a request that passed."""
        self.length, self.batch, self.expects_continue = 0, 0, False
        self.command, self.requestline = "", ""  # (what the library resets first)
        recorder = framing.Recorder(self.rfile)
        try:
            framing.request_line(self.raw_requestline)
            self.rfile = recorder  # type: ignore[assignment]
            try:
                if not super().parse_request():
                    return False
            finally:
                self.rfile = recorder.f
            limit = self.server.config.max_body
            self.length = framing.body_length(
                recorder.lines, self.headers, self.request_version, limit
            )
        except Reply as r:
            self._refuse(r.status, r.kind, str(r))
            return False
        if self.expects_continue:
            super().handle_expect_100()
        return True

    def handle_expect_100(self) -> bool:
        self.expects_continue = True  # answered once the request has passed parse_request
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The library's refusals, as every other: a JSON error, the connection closed."""
        self._refuse(code, KINDS.get(code, "BadRequest"), message or HTTPStatus(code).phrase)

    def _refuse(self, status: int, kind: str, message: str) -> None:
        """Refused before it ran: answered, and the connection closed (what follows on it
        cannot be told from this request's rest)."""
        self.close_connection = True
        self.request_version = self.protocol_version  # (a cut line may read as HTTP/0.9)
        if self.late:  # a request line or headers cut short by the deadline: say so
            status, kind, message = 408, "Timeout", LATE
        error = {"error": {"kind": kind, "message": message}}
        self._answer(status, error, "unknown", None, time.monotonic())

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        return  # every request is logged once, as JSON, by _answer

    def do_GET(self) -> None:  # noqa: N802 - the base class's names
        self._handle("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        start = time.monotonic()
        if not self.length:  # arrived whole: no body follows
            self.server.watchdog.disarm(self)
        verb, vm = verb_of(method, self.path), None  # a label from a fixed list, for metrics
        try:
            if self.late:  # headers cut short: what arrived is not the request; nothing runs
                self.close_connection = True
                raise Reply(408, "Timeout", LATE)
            verb, vm, body = self._route(method)
            status, payload = 200, body
        except Reply as r:
            status, payload = r.status, {"error": {"kind": r.kind, "message": str(r)}}
        except FirerouteError as exc:
            status = next((s for cls, s in STATUS if isinstance(exc, cls)), 500)
            payload = {"error": {"kind": type(exc).__name__, "message": str(exc)}}
        except Exception as exc:  # a bug: one answer and one log line, the daemon lives on
            status = 500
            payload = {
                "error": {"kind": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
            }
        self._answer(status, payload, verb, vm, start)

    def _answer(
        self, status: int, payload: object, verb: str, vm: str | None, start: float
    ) -> None:
        if isinstance(payload, str):
            data, kind = payload.encode(), "text/plain; version=0.0.4"
        else:
            data, kind = (jsontext.dumps(payload) + "\n").encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
            self.linger = status >= 400
        self.end_headers()
        if self.command != "HEAD":  # (HEAD is no verb here: its 501 carries no content)
            self.wfile.write(data)
        ms = now_ms(start)
        self.server.metrics.add(verb, status, ms)
        record = {"uid": self.uid, "verb": verb, "vm": vm, "status": status, "ms": round(ms, 3)}
        if self.batch:
            record["batch"] = self.batch  # it ran together with batch - 1 other calls
        self.server.log(record)

    def _body(self) -> dict[str, object]:
        """The request's JSON body (every method's: what is sent is read, so that nothing of
        it is taken for the next request on the connection)."""
        if not self.length:
            return {}
        try:
            raw = self.rfile.read(self.length)
        except TimeoutError:
            self.close_connection = True
            raise Reply(408, "Timeout", "the request body did not arrive in time") from None
        self.server.watchdog.disarm(self)
        if len(raw) < self.length:  # cut off by the deadline, or the client stopped sending
            self.close_connection = True
            if self.late:
                raise Reply(408, "Timeout", LATE)
            raise Reply(400, "UsageError", "the body ended before its Content-Length")
        return body.options(raw)

    def _submit(
        self, kind: type[T], verb: str, name: str | None = None, options: dict | None = None
    ) -> T:
        """The worker's answer to one call: of ``kind``, as each verb gives it."""
        call = Call(verb, name, options)
        try:
            result = self.server.worker.run(call)
        finally:
            self.batch = call.batch
        assert isinstance(result, kind), f"{verb} gave a {type(result).__name__}"
        return result

    def _route(self, method: str) -> tuple[str, str | None, object]:
        """The request's verb, VM and answer, by :data:`ROUTES` (a path with no VM name) and
        :data:`VM_ROUTES` (``/vms/{name}`` and its parts): a path that is neither is 404; a
        VM's path with a method it has no verb for, 405 (once the name passed)."""
        path, _, query = self.path.partition("?")
        parts = [p for p in path.split("/") if p]
        body = self._body()
        self.request_body, self.with_record = body, "record=1" in query.split("&")
        if len(parts) == 1 and (method, parts[0]) in ROUTES:
            verb, answer = ROUTES[(method, parts[0])]
            return verb, None, answer(self)
        part = vm_part(parts)
        if part is None:
            raise Reply(404, "NotFound", f"no resource {path}")
        name = parts[1]
        check_vm_name(name)
        if not self.server.config.may_name(self.uid, name):
            raise NotAllowed(f'vm names of uid {self.uid} start with "u{self.uid}-"')
        if (method, part) not in VM_ROUTES:
            methods = [m for m, p in VM_ROUTES if p == part]
            why = f": use {methods[0]}" if len(methods) == 1 else " is not a verb here"
            raise Reply(405, "MethodNotAllowed", f"{method} {path}{why}")
        verb, act = VM_ROUTES[(method, part)]
        return verb, name, act(self, name, body)

    # -- the verbs: ROUTES (no VM named) ------------------------------------------------------
    def _healthz(self) -> object:
        if not self.server.worker.thread.is_alive():
            raise Reply(503, "Unavailable", "the worker thread has stopped")
        return {"ok": True}

    def _metrics(self) -> object:
        from fireroute import stats

        rows = self._stats()
        return self.server.metrics.text(len(rows)) + stats.prometheus(rows)

    def _stats(self) -> list[dict[str, object]]:
        rows = self._submit(list, "stats")
        return [r for r in rows if self.server.config.may_name(self.uid, r["name"])]

    def _check(self) -> object:
        report = self._submit(dict, "check")
        config = self.server.config
        if self.uid == 0 or not config.tenant_prefix:
            return report
        mine = {n: p for n, p in report["vms"].items() if config.may_name(self.uid, n)}
        return {"ok": not any(mine.values()), "vms": mine}  # its own only

    def _list(self) -> object:
        vms = self._submit(list, "list")
        return [self._vm(v) for v in vms if self.server.config.may_name(self.uid, v.name)]

    def _cni(self) -> object:
        """A CNI plugin's call handed off (handoff.py): root's alone, since a network
        configuration names pools, uplinks and the IPAM plugin to run."""
        if self.uid != 0:
            raise NotAllowed("CNI calls are root's (a network configuration is the operator's)")
        return self._submit(dict, "cni", None, self.request_body)

    def _vm(self, vm: Vm) -> dict[str, object]:
        """A VM's JSON; with ``?record=1`` its record too (what the CLI prints it from)."""
        out = vm.as_dict()
        if self.with_record:
            from fireroute.handoff import wire

            out["record"] = wire(vm.record)
        return out

    # -- the verbs: VM_ROUTES (/vms/{name}, its name checked) ---------------------------------
    def _get(self, name: str, body: dict[str, object]) -> object:
        return self._vm(self._submit(Vm, "get", name))

    def _up(self, name: str, body: dict[str, object]) -> object:
        options = self.server.config.options(body)
        return self._vm(self._submit(Vm, "up", name, options))

    def _down(self, name: str, body: dict[str, object]) -> object:
        return {"removed": self._submit(bool, "down", name)}

    def _policy(self, name: str, body: dict[str, object]) -> object:
        config = self.server.config
        unknown = sorted(set(body) - {"egress", "allow_out", "deny_out"})
        if unknown:
            raise UsageError(f'policy changes only the egress policy, not "{unknown[0]}"')
        config.options(body)  # the operator may have fixed these as well
        if "allow_out" not in config.client_options:
            # a new policy replaces the VM's whole policy: any change can widen it (an
            # "egress" of "public" undoes the operator's "none")
            raise NotAllowed(
                "changing a vm's egress policy can widen what it reaches: the operator's "
                '(its config\'s client_options may allow "allow_out")'
            )
        return self._vm(self._submit(Vm, "policy", name, body))

    def _attach(self, name: str, body: dict[str, object]) -> object:
        from fireroute.serve.config import ATTACH_SETTINGS

        settings = {k: v for k, v in body.items() if k != "socket"}
        unknown = sorted(set(settings) - set(ATTACH_SETTINGS))
        if unknown:
            raise UsageError(f'unknown attach setting "{unknown[0]}"')
        return self._attach_vmm(name, body.get("socket"), settings)

    def _attach_vmm(self, name: str, socket_name: object, settings: dict[str, Any]) -> object:
        """Firecracker is talked to on this connection's thread, not the worker's (a VMM that
        never answers holds up only its own client), through the socket checked and opened
        by ``vmm_socket``, with at most ATTACH_TIMEOUT per request."""
        from fireroute.firecracker import verbs
        from fireroute.serve.config import ATTACH_TIMEOUT

        fd = self.server.config.vmm_socket(self.uid, socket_name)
        try:
            vm = self._submit(Vm, "record", name)
            if vm.state != "active":
                raise ConflictError(f'vm "{name}" is not up (state {vm.state})')
            iface_id = settings.pop("iface_id", None)
            timeout = settings.pop("timeout", ATTACH_TIMEOUT)
            if not isinstance(timeout, int | float) or isinstance(timeout, bool):
                raise UsageError("invalid --timeout: use a number of seconds")
            req = verbs.AttachRequest(
                f"/proc/self/fd/{fd}", timeout=min(float(timeout), ATTACH_TIMEOUT), **settings
            )
            report = verbs.attach(vm.record, iface_id, req)
        finally:
            os.close(fd)
        report["socket"] = socket_name
        return report


KINDS = {408: "Timeout", 411: "LengthRequired", 413: "TooLarge", 414: "TooLarge", 431: "TooLarge"}
KINDS |= {501: "NotImplemented", 505: "VersionNotSupported"}
ROUTES: dict[tuple[str, str], tuple[str, Callable[[Handler], object]]] = {
    ("GET", "healthz"): ("healthz", Handler._healthz),
    ("GET", "metrics"): ("metrics", Handler._metrics),
    ("GET", "stats"): ("stats", Handler._stats),
    ("GET", "check"): ("check", Handler._check),
    ("GET", "vms"): ("list", Handler._list),
    ("POST", "cni"): ("cni", Handler._cni),
}
"""(method, the path's one part) -> the verb and what answers it: the paths that name no VM
(with another method, they are not found)"""
VM_ROUTES: dict[tuple[str, str], tuple[str, Callable[[Handler, str, dict[str, object]], object]]]
VM_ROUTES = {
    ("GET", ""): ("get", Handler._get),
    ("PUT", ""): ("up", Handler._up),
    ("DELETE", ""): ("down", Handler._down),
    ("PUT", "policy"): ("policy", Handler._policy),
    ("POST", "attach"): ("attach", Handler._attach),
}
"""(method, the part after ``/vms/{name}``: "" for none) -> the verb and what answers it"""
VM_PARTS = frozenset(part for _, part in VM_ROUTES)


def vm_part(parts: list[str]) -> str | None:
    """What a path ``/vms/{name}[/PART]`` asks of the VM ("" for the VM itself; None: the
    path is no VM's)."""
    if len(parts) not in (2, 3) or parts[0] != "vms":
        return None
    part = "/".join(parts[2:])
    return part if part in VM_PARTS else None


def verb_of(method: str, path: str) -> str:
    """The request's verb, from a fixed list (a metric label never carries a client's text):
    a VM's part asked with a method it has no verb for is still labelled by the part."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if len(parts) == 1 and (method, parts[0]) in ROUTES:
        return ROUTES[(method, parts[0])][0]
    part = vm_part(parts)
    if part is None:
        return "unknown"
    if (method, part) in VM_ROUTES:
        return VM_ROUTES[(method, part)][0]
    return part or "unknown"


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, path: str, config: ServerConfig, worker: Worker, log) -> None:  # noqa: ANN001
        self.config, self.worker, self.log = config, worker, log
        self.metrics = Metrics()
        self.watchdog = Watchdog()
        self.open_lock = threading.Lock()
        self.open = 0  # connections being served (a thread each)
        super().__init__(path, Handler)

    def process_request(self, request, client_address) -> None:  # noqa: ANN001
        """A thread for the connection, or, with ``max_connections`` open, a 503 at once."""
        with self.open_lock:
            full = self.open >= self.config.max_connections
            if not full:
                self.open += 1
        if full:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self.open_lock:
                self.open -= 1
            raise

    def process_request_thread(self, request, client_address) -> None:  # noqa: ANN001
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.open_lock:
                self.open -= 1

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        """A connection's thread ended by an exception (a client gone while it was answered,
        or a bug): one log line instead of the library's traceback; the daemon goes on."""
        exc = sys.exc_info()[1]
        self.log({"event": "connection-error", "error": f"{type(exc).__name__}: {exc}"[:200]})

    def _refuse(self, request: socket.socket) -> None:
        n = self.config.max_connections
        message = f"the server has {n} connections open (its max_connections); try again"
        data = (jsontext.dumps({"error": {"kind": "Busy", "message": message}}) + "\n").encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            request.settimeout(0.5)  # a fresh socket's buffer takes it; never wait on a client
            request.sendall(head.encode() + data)
            request.shutdown(socket.SHUT_WR)
        self.watchdog.close_later(request)
        self.metrics.add("connect", 503, 0.0)
        self.log({"verb": "connect", "status": 503, "open": n})


def listen(path: str, group: str | None, config: ServerConfig, worker: Worker, log) -> Server:  # noqa: ANN001
    """Bind the socket 0660 root:``group`` (created with no access at all first, so there is
    no moment in which anyone else could connect)."""
    gid = 0
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsageError(f'unknown group "{group}"') from None
    if os.path.exists(path):
        try:
            socket.socket(socket.AF_UNIX).connect(path)
        except OSError:
            os.unlink(path)  # a socket nobody listens on: a stale one
        else:
            raise ConflictError(f"{path}: another server is listening there")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    old = os.umask(0o777)
    try:
        server = Server(path, config, worker, log)
    finally:
        os.umask(old)
    os.chown(path, 0, gid)
    os.chmod(path, 0o660)
    return server


def advertising(config: ServerConfig, state: str, worker: Worker, log) -> Advertiser | None:  # noqa: ANN001
    """The daemon's RA responder (serve/ra.py), started, when the config wants it."""
    from fireroute.serve import ra

    if not ra.wanted(config.ra, config.fixed, config.client_options):
        return None
    advertiser = ra.Advertiser(state, config.dns6, log)
    worker.on_change = advertiser.changed
    advertiser.start()
    return advertiser


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fireroute serve", description="the fireroute daemon")
    p.add_argument("--socket", required=True, help="unix socket to listen on")
    p.add_argument("--group", help="group allowed to connect (the socket is 0660 root:GROUP)")
    p.add_argument("--config", help="server config (JSON; see fireroute/serve/config.py)")
    p.add_argument("--state", help="state file (default: the config's, or the CLI's default)")
    return p


def main(argv: list[str]) -> int:
    args = arguments().parse_args(argv)
    from fireroute.state.store import default_path

    def log(record: dict) -> None:
        sys.stderr.write(jsontext.dumps(record) + "\n")
        sys.stderr.flush()

    advertiser = None
    try:
        config = ServerConfig.load(args.config) if args.config else ServerConfig()
        state = args.state or config.state or default_path()
        worker = Worker(state, config.ready, config.fixed)
        worker.log = log
        recovered, drained = worker.start()
        advertiser = advertising(config, state, worker, log)
        server = listen(args.socket, args.group, config, worker, log)
    except FirerouteError as exc:
        if advertiser is not None:
            advertiser.stop()
        sys.stderr.write(f"fireroute serve: {exc}\n")
        return exc.exit_code
    log({"event": "listening", "socket": args.socket, "state": state, "gc": recovered,
         "ra": advertiser is not None, "ready": config.ready, "drained": drained})  # fmt: skip
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        worker.stop()
        if advertiser is not None:
            advertiser.stop()
        if os.path.exists(args.socket):
            os.unlink(args.socket)
    return 0
