"""A small HTTP/1.1 client for the Firecracker API over its unix socket.

Standard library only, and ``socket``/``json`` are imported on first use, so importing
this module costs next to nothing. Each request uses its own connection (a unix
socket connect costs microseconds), so there is no keep-alive state to go stale.
"""

import time

from fireroute.firecracker.bootargs import set_ip_arg

MTU_MIN_VERSION = (1, 16, 0)
"""First Firecracker version whose NetworkInterface accepts ``mtu``."""

_MAX_HEADER_LINE = 64 * 1024
_MAX_HEADERS = 100
_MAX_BODY = 16 * 1024 * 1024


class FirecrackerError(Exception):
    """Base of every error raised while talking to Firecracker."""


class FirecrackerUnreachable(FirecrackerError):
    """The API socket could not be reached, or the connection broke."""

    def __init__(self, socket_path: str, reason: str) -> None:
        self.socket_path = socket_path
        self.reason = reason
        super().__init__(f"cannot reach firecracker API socket {socket_path}: {reason}")


class FirecrackerTimeout(FirecrackerUnreachable):
    """Firecracker did not answer in time."""


class FirecrackerProtocolError(FirecrackerError):
    """Firecracker answered something that is not a valid HTTP/JSON response."""


class FirecrackerApiError(FirecrackerError):
    """Firecracker answered with a non-2xx status."""

    def __init__(
        self,
        method: str,
        path: str,
        status: int,
        fault_message: str,
        sent_body: object = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.fault_message = fault_message
        self.sent_body = sent_body
        detail = fault_message if fault_message else "(no fault_message)"
        super().__init__(f"firecracker {method} {path} failed ({status}): {detail}")


class FirecrackerClient:
    """Requests to one Firecracker API socket.

    ``timeout`` bounds each request as a whole (connect, send and full response).
    """

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._version: tuple[int, int, int] | None = None

    # -- public verbs -------------------------------------------------------------

    def get(self, path: str) -> dict | None:
        """GET ``path``; the decoded JSON body, or None if there is none."""
        return self.request("GET", path)

    def put(self, path: str, body: dict | None = None) -> dict | None:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: dict | None = None) -> dict | None:
        return self.request("PATCH", path, body)

    def version(self) -> tuple[int, int, int]:
        """Firecracker's version (cached per client): ``GET /version``, or, from a VMM that
        has no such endpoint (before 1.0: v0.24.4 answers it with 400), ``vmm_version`` of
        ``GET /``, which every version has."""
        if self._version is None:
            path, key = "/version", "firecracker_version"
            try:
                answer = self.get(path)
            except FirecrackerApiError as exc:
                if not missing_endpoint(exc):
                    raise
                path, key = "/", "vmm_version"
                answer = self.get(path)
            raw = answer.get(key) if isinstance(answer, dict) else None
            if not isinstance(raw, str):
                raise FirecrackerProtocolError(
                    f"GET {path} on {self.socket_path} has no {key}: {answer!r}"
                )
            self._version = parse_version(raw)
        return self._version

    def request(self, method: str, path: str, body: object = None) -> dict | None:
        """Send one request; return the decoded JSON body (None for an empty body)."""
        if not path.startswith("/") or any(ch.isspace() or ord(ch) < 32 for ch in path):
            raise ValueError(f"invalid API path {path!r}")
        import json

        payload = b""
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
        head = [f"{method} {path} HTTP/1.1", "Host: localhost", "Accept: application/json"]
        if body is not None or method in ("PUT", "PATCH"):
            head.append("Content-Type: application/json")
            head.append(f"Content-Length: {len(payload)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + payload

        status, reason, raw = self._exchange(data)

        text = raw.decode("utf-8", "replace")
        if not 200 <= status < 300:
            raise FirecrackerApiError(method, path, status, _fault_message(text, reason), body)
        if not raw.strip():
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise FirecrackerProtocolError(
                f"firecracker {method} {path} returned invalid JSON ({exc}): {text[:200]!r}"
            ) from None

    # -- transport ----------------------------------------------------------------

    def _exchange(self, data: bytes) -> tuple[int, str, bytes]:
        import socket

        deadline = time.monotonic() + self.timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(data)
            except TimeoutError:
                raise FirecrackerTimeout(
                    self.socket_path, f"no answer within {self.timeout:g}s"
                ) from None
            except OSError as exc:
                raise FirecrackerUnreachable(self.socket_path, _os_reason(exc)) from None
            return _ResponseReader(sock, deadline, self).read()
        finally:
            sock.close()


class _ResponseReader:
    """Reads one HTTP/1.1 response from a socket, honouring an overall deadline."""

    def __init__(self, sock, deadline: float, client: FirecrackerClient) -> None:
        self.sock = sock
        self.deadline = deadline
        self.client = client
        self.buf = b""
        self.eof = False

    def _fill(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self._timeout()
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            self._timeout()
        except OSError as exc:
            raise FirecrackerUnreachable(self.client.socket_path, _os_reason(exc)) from None
        if not chunk:
            self.eof = True
        self.buf += chunk

    def _timeout(self):
        raise FirecrackerTimeout(
            self.client.socket_path, f"no complete answer within {self.client.timeout:g}s"
        )

    def _closed(self):
        raise FirecrackerUnreachable(
            self.client.socket_path, "connection closed before the response was complete"
        )

    def readline(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line, self.buf = self.buf[: end + 1], self.buf[end + 1 :]
                return line.rstrip(b"\r\n")
            if len(self.buf) > _MAX_HEADER_LINE:
                raise FirecrackerProtocolError("firecracker sent an overlong HTTP line")
            if self.eof:
                self._closed()
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if self.eof:
                self._closed()
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_to_eof(self) -> bytes:
        while not self.eof:
            if len(self.buf) > _MAX_BODY:
                raise FirecrackerProtocolError("firecracker response body too large")
            self._fill()
        data, self.buf = self.buf, b""
        return data

    def read(self) -> tuple[int, str, bytes]:
        while True:
            status, reason, headers = self._read_head()
            if not 100 <= status < 200:  # skip interim responses such as 100 Continue
                break
        if status in (204, 304):
            return status, reason, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, reason, self._read_chunked()
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > _MAX_BODY:
                raise FirecrackerProtocolError(f"bad Content-Length {length!r} from firecracker")
            return status, reason, self.read_exact(int(length))
        return status, reason, self.read_to_eof()

    def _read_head(self) -> tuple[int, str, dict[str, str]]:
        line = self.readline()
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise FirecrackerProtocolError(f"bad HTTP status line from firecracker: {line!r}")
        status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = self.readline()
            if not line:
                return status, reason, headers
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise FirecrackerProtocolError(f"bad HTTP header from firecracker: {line!r}")
            headers[name.strip().lower()] = value.strip()
        raise FirecrackerProtocolError("too many HTTP headers from firecracker")

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.readline()
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                msg = f"bad chunk size from firecracker: {line!r}"
                raise FirecrackerProtocolError(msg) from None
            if size == 0:
                while self.readline():  # trailers, up to the empty line
                    pass
                return bytes(body)
            if len(body) + size > _MAX_BODY:
                raise FirecrackerProtocolError("firecracker response body too large")
            body += self.read_exact(size)
            if self.read_exact(2) != b"\r\n":
                raise FirecrackerProtocolError("chunk from firecracker not followed by CRLF")


def missing_endpoint(exc: FirecrackerApiError) -> bool:
    """Whether Firecracker refused a request because this version has no such method and
    path (its router answers 400 "Invalid request method and/or path"), not for its body."""
    return exc.status == 404 or (
        exc.status == 400 and exc.fault_message.startswith("Invalid request method and/or path")
    )


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _fault_message(text: str, reason: str) -> str:
    """Firecracker's ``fault_message``, verbatim; else the raw body; else the reason."""
    stripped = text.strip()
    if stripped.startswith("{"):
        import json

        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("fault_message"), str):
            return decoded["fault_message"]
    return stripped or reason.strip()


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.16.1"`` (also ``"v1.7.0-dev"``) -> ``(1, 16, 1)``."""
    core = text.strip().removeprefix("v")
    numbers: list[int] = []
    for part in core.split(".")[:3]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) != len(part):
            break
    if not numbers:
        raise FirecrackerProtocolError(f"cannot parse firecracker version {text!r}")
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


# -- operations -------------------------------------------------------------------


def check_resource_id(value: object, what: str = "iface_id") -> str:
    """Firecracker accepts path ids made of alphanumerics and ``_`` only."""
    if (
        not isinstance(value, str)
        or not value
        or not value.isascii()
        or not all(ch.isalnum() or ch == "_" for ch in value)
    ):
        raise ValueError(
            f"invalid {what} {value!r}: Firecracker ids may contain only letters, digits and '_'"
        )
    return value


def put_network_interface(
    client: FirecrackerClient, iface_body: dict, mtu: int | None = None
) -> dict:
    """``PUT /network-interfaces/{iface_id}`` (pre-boot); returns the body sent.

    ``mtu`` (68..65535, may also come as ``iface_body["mtu"]``) is only sent to
    Firecracker >= 1.16.0, which asks ``GET /version`` first; older versions reject
    the unknown field, so there it is left out -- check ``"mtu" in result``.
    """
    body = dict(iface_body)
    iface_id = check_resource_id(body.get("iface_id"))
    if "mtu" in body:
        body_mtu = body.pop("mtu")
        if mtu is not None and mtu != body_mtu:
            raise ValueError(f"conflicting mtu values: {mtu!r} and iface_body mtu {body_mtu!r}")
        mtu = body_mtu
    if mtu is not None:
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            raise ValueError(f"invalid mtu {mtu!r}: expected a whole number from 68 to 65535")
        if client.version() >= MTU_MIN_VERSION:
            body["mtu"] = mtu
    client.put(f"/network-interfaces/{iface_id}", body)
    return body


def patch_network_interface(
    client: FirecrackerClient,
    iface_id: str,
    rx_rate_limiter: dict | None = None,
    tx_rate_limiter: dict | None = None,
) -> dict:
    """``PATCH /network-interfaces/{iface_id}`` (post-boot): update rate limiters.

    Firecracker merges the update: an omitted limiter (or bucket) stays as it was; a
    bucket of size 0 removes that limit (see ``ratelimit.rate_limiter(..."off")``).
    """
    check_resource_id(iface_id)
    if rx_rate_limiter is None and tx_rate_limiter is None:
        raise ValueError("nothing to update: give rx_rate_limiter and/or tx_rate_limiter")
    body: dict = {"iface_id": iface_id}
    if rx_rate_limiter is not None:
        body["rx_rate_limiter"] = rx_rate_limiter
    if tx_rate_limiter is not None:
        body["tx_rate_limiter"] = tx_rate_limiter
    client.patch(f"/network-interfaces/{iface_id}", body)
    return body


def check_mmds_address(address: str) -> str:
    """MMDS wants a link-local 169.254.A.B with A in 1..254 (the spec's pattern)."""
    parts = address.split(".") if isinstance(address, str) else []
    ok = (
        len(parts) == 4
        and parts[:2] == ["169", "254"]
        and all(p.isascii() and p.isdigit() and (p == "0" or p[0] != "0") for p in parts[2:])
        and 1 <= int(parts[2]) <= 254
        and 0 <= int(parts[3]) <= 255
    )
    if not ok:
        raise ValueError(
            f"invalid MMDS address {address!r}: expected 169.254.A.B with A 1-254 and B 0-255"
        )
    return address


def put_mmds_config(
    client: FirecrackerClient,
    iface_ids: list[str],
    version: str = "V2",
    ipv4_address: str | None = None,
) -> dict:
    """``PUT /mmds/config`` (pre-boot); returns the body sent.

    The interfaces must already exist. ``ipv4_address`` None keeps Firecracker's
    default (169.254.169.254).
    """
    if isinstance(iface_ids, str) or not iface_ids:
        raise ValueError("iface_ids must be a non-empty list of interface ids")
    ids = [check_resource_id(i) for i in iface_ids]
    if version not in ("V1", "V2"):
        raise ValueError(f"invalid MMDS version {version!r}: expected 'V1' or 'V2'")
    body: dict = {"version": version, "network_interfaces": ids}
    if ipv4_address is not None:
        body["ipv4_address"] = check_mmds_address(ipv4_address)
    client.put("/mmds/config", body)
    return body


def merge_boot_args(client: FirecrackerClient, ip_arg: str | None) -> bool:
    """Set the kernel ``ip=`` argument of the configured boot source (pre-boot).

    Reads the boot source from ``GET /vm/config`` (the only GET that returns
    ``boot_args``), replaces any ``ip=`` argument (``None`` removes it) and PUTs
    ``/boot-source`` back with everything else unchanged. Returns False when nothing
    had to change (no PUT sent).
    """
    config = client.get("/vm/config")
    boot = config.get("boot-source") if isinstance(config, dict) else None
    if not isinstance(boot, dict) or not boot.get("kernel_image_path"):
        raise FirecrackerError(
            f"firecracker at {client.socket_path} has no boot source configured "
            "(PUT /boot-source first; a VM restored from a snapshot has none)"
        )
    current = boot.get("boot_args")
    if current is None and ip_arg is None:
        return False
    updated = set_ip_arg(current or "", ip_arg)
    if current is not None and updated == current:
        return False
    # GET returns unset optional fields as null (e.g. initrd_path); the PUT schema
    # wants them absent.
    body = {key: value for key, value in boot.items() if value is not None}
    body["boot_args"] = updated
    client.put("/boot-source", body)
    return True
