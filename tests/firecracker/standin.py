"""A stand-in for Firecracker's API server, driven by Firecracker's own OpenAPI spec (or the
project's description of the part used, ``apidesc``, which is checked against it).

It listens on a unix socket (in a background thread) and, for every request:

* looks up method + path template in the spec (400 "Invalid request method and/or
  path" otherwise) and checks path ids the way Firecracker does (alphanumerics and
  ``_`` only);
* validates the JSON body against the operation's body schema with ``specschema``
  (required fields, types, minimum/maximum, enum, patterns, no unknown fields);
* requires the id in the path to equal the same-named field of the body;
* enforces pre-boot only / post-boot only operations (``Spec.boot_phase``);
* keeps a little state (boot source, interfaces, MMDS config, started) so that
  ``GET /vm/config``, ``GET /version`` and ``PUT /actions`` behave plausibly.

Success is ``204 No Content`` (``200`` + JSON for GETs); failures are ``400`` with
``{"fault_message": ...}``. Accepted requests are recorded in ``accepted`` and rejected
ones in ``rejected``; tests can queue canned raw responses with ``queue_raw``.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import tempfile
import threading
from dataclasses import dataclass, field

from .specschema import Spec

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 500: "Error"}


@dataclass
class Recorded:
    method: str
    path: str
    body: object
    headers: dict = field(default_factory=dict)
    fault: str | None = None


class ApiFault(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:  # one connection; HTTP/1.1 keep-alive until the peer closes
        standin: FirecrackerStandin = self.server.standin  # type: ignore[attr-defined]
        while True:
            line = self.rfile.readline(65537)
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                continue
            try:
                method, target, _version = line.decode("latin-1").split()
            except ValueError:
                self.wfile.write(standin.encode(400, {"fault_message": "bad request line"}))
                return
            headers: dict[str, str] = {}
            while True:
                header = self.rfile.readline(65537)
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", "0") or 0))
            data, close = standin.respond(method, target, headers, body)
            self.wfile.write(data)
            self.wfile.flush()
            if close:
                return


class FirecrackerStandin:
    def __init__(self, spec: Spec, socket_path: str | None = None) -> None:
        self.spec = spec
        self._tmpdir = None
        if socket_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="fcsi-", dir="/tmp")
            socket_path = os.path.join(self._tmpdir, "api.sock")
        self.socket_path = socket_path
        self.accepted: list[Recorded] = []
        self.rejected: list[Recorded] = []
        self.boot_source: dict | None = None
        self.interfaces: dict[str, dict] = {}
        self.mmds_config: dict | None = None
        self.started = False
        self.chunked = False  # send JSON bodies with Transfer-Encoding: chunked
        # an older Firecracker's router: these paths are unknown (see ``as_older``)
        self.missing: set[str] = set()
        self.vmm_version: str | None = None
        self._raw_queue: list[tuple[bytes, bool]] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> FirecrackerStandin:
        self._server = _Server(self.socket_path, _Handler)
        self._server.standin = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        elif os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def __enter__(self) -> FirecrackerStandin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test helpers -------------------------------------------------------------

    def queue_raw(self, data: bytes, close: bool = False) -> None:
        """Answer the next valid request with these exact bytes (then maybe hang up)."""
        self._raw_queue.append((data, close))

    def requests(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.accepted
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    @property
    def version(self) -> str:
        return self.vmm_version or self.spec.version

    def as_older(self, version: str = "0.24.4", missing: tuple = ("/version", "/vm/config")):
        """Answer as a Firecracker before 1.0 does (seen against v0.24.4): ``GET /`` reports
        ``version``, and ``missing`` paths are unknown to its router (400)."""
        self.vmm_version = version
        self.missing = set(missing)
        return self

    # -- HTTP ---------------------------------------------------------------------

    def encode(self, status: int, payload: object | None) -> bytes:
        reason = _REASONS.get(status, "Unknown")
        head = f"HTTP/1.1 {status} {reason}\r\nServer: Firecracker API\r\n"
        if payload is None:
            return (head + "\r\n").encode()
        data = json.dumps(payload).encode()
        head += "Content-Type: application/json\r\n"
        if self.chunked:
            chunks = b"".join(
                f"{len(data[i : i + 7]):x}\r\n".encode() + data[i : i + 7] + b"\r\n"
                for i in range(0, len(data), 7)
            )
            return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
        return (head + f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    def respond(
        self, method: str, target: str, headers: dict, raw_body: bytes
    ) -> tuple[bytes, bool]:
        with self._lock:
            path = target.split("?", 1)[0]
            body: object = None
            try:
                body = self._parse_body(raw_body)
                status, payload = self._dispatch(method, path, body)
            except ApiFault as fault:
                self.rejected.append(Recorded(method, path, body, headers, str(fault)))
                return self.encode(fault.status, {"fault_message": str(fault)}), False
            self.accepted.append(Recorded(method, path, body, headers))
            if self._raw_queue:
                return self._raw_queue.pop(0)
            return self.encode(status, payload), False

    @staticmethod
    def _parse_body(raw: bytes) -> object:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiFault(
                f"An error occurred when deserializing the json body of a request: {exc}."
            ) from None

    # -- Firecracker behaviour ----------------------------------------------------

    def _dispatch(self, method: str, path: str, body: object) -> tuple[int, object | None]:
        found = self.spec.route(path) if path not in self.missing else None
        operation = found[1].get(method.lower()) if found else None
        if operation is None and path in self.missing:  # its wording: the first path segment
            raise ApiFault(f"Invalid request method and/or path: {method} {path.split('/')[1]}.")
        if operation is None:
            raise ApiFault(f"Invalid request method and/or path: {method} {path}.")
        template, _ops, path_params = found

        for value in path_params.values():
            if not value:
                raise ApiFault("Required key is missing: resource ID.")
            if not all(ch.isalnum() or ch == "_" for ch in value):
                raise ApiFault(
                    "API Resource IDs can only contain alphanumeric characters and underscores."
                )

        param = self.spec.body_parameter(operation)
        if param is None:
            if body is not None:
                raise ApiFault(f"{method} request cannot have a body.")
        else:
            if body is None:
                if param.get("required"):
                    raise ApiFault("The body of the request is empty.")
            else:
                problems = self.spec.errors(body, param["schema"])
                if problems:
                    raise ApiFault(
                        "An error occurred when deserializing the json body of a request: "
                        + "; ".join(problems)
                        + "."
                    )
                for name, value in path_params.items():
                    if isinstance(body, dict) and name in body and body[name] != value:
                        raise ApiFault(
                            f"The id from the path [{value}] does not match the id "
                            f"from the body [{body[name]}]!"
                        )

        boot = self.spec.boot_phase(operation)
        if boot == "pre" and self.started:
            raise ApiFault("The requested operation is not supported after starting the microVM.")
        if boot == "post" and not self.started:
            raise ApiFault("The requested operation is not supported before starting the microVM.")

        handler = getattr(self, f"_on_{method.lower()}_{_slug(template)}", None)
        if handler is not None:
            return handler(body, **path_params)
        if method == "GET":
            return 200, {}
        return 204, None

    def _on_get_version(self, body):
        return 200, {"firecracker_version": self.version}

    def _on_get_root(self, body):
        return 200, {
            "app_name": "Firecracker",
            "id": "anonymous-instance",
            "state": "Running" if self.started else "Not started",
            "vmm_version": self.version,
        }

    def _on_put_boot_source(self, body):
        self.boot_source = dict(body)
        return 204, None

    def _on_put_network_interfaces(self, body, iface_id):
        self.interfaces[iface_id] = dict(body)
        return 204, None

    def _on_patch_network_interfaces(self, body, iface_id):
        current = self.interfaces.get(iface_id)
        if current is None:
            raise ApiFault(f"Invalid network interface ID - not found: {iface_id}")
        for side in ("rx_rate_limiter", "tx_rate_limiter"):
            update = body.get(side)
            if update is None:
                continue
            limiter = dict(current.get(side) or {})
            for bucket_name, bucket in update.items():
                if bucket.get("size", 0) == 0:
                    limiter.pop(bucket_name, None)  # a 0-sized bucket removes the limit
                else:
                    limiter[bucket_name] = bucket
            current[side] = limiter
        return 204, None

    def _on_put_mmds_config(self, body):
        missing = [i for i in body["network_interfaces"] if i not in self.interfaces]
        if missing:
            raise ApiFault(
                "The list of network interface IDs that allow forwarding MMDS requests is "
                f"invalid: {', '.join(missing)}"
            )
        self.mmds_config = dict(body)
        return 204, None

    def _on_put_actions(self, body):
        if body.get("action_type") == "InstanceStart":
            if self.started:
                raise ApiFault("The microVM is already running.")
            if self.boot_source is None:
                raise ApiFault("Cannot start microvm without kernel configuration.")
            self.started = True
        return 204, None

    def _on_get_vm_config(self, body):
        config: dict = {}
        if self.boot_source is not None:
            # Like Firecracker: unset initrd_path comes back as null, unset
            # boot_args is left out.
            boot = {"kernel_image_path": self.boot_source["kernel_image_path"]}
            boot["initrd_path"] = self.boot_source.get("initrd_path")
            if "boot_args" in self.boot_source:
                boot["boot_args"] = self.boot_source["boot_args"]
            config["boot-source"] = boot
        config["network-interfaces"] = list(self.interfaces.values())
        if self.mmds_config is not None:
            config["mmds-config"] = self.mmds_config
        return 200, config


def _slug(template: str) -> str:
    parts = [p for p in template.strip("/").split("/") if not p.startswith("{")]
    return "_".join(p.replace("-", "_") for p in parts) or "root"
