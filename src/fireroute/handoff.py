"""Hand-off to the daemon: the CLI's per-VM verbs and the CNI plugin's calls sent to a running
``fireroute serve`` (docs/daemon.md, "Hand-off"), so that a per-VM command pays for a
connection instead of the state file, the planner and the kernel layer.

The CLI (``--daemon PATH`` or ``FIREROUTE_SOCKET``) gets a :class:`DaemonHost` in place of
:class:`fireroute.Host` for ``up``, ``down``, ``show`` and ``ls``: the daemon's answers carry
each VM's record (``?record=1``), rebuilt here into the model's ``Vm``, so the CLI prints
them with its own functions, the same bytes as in-process. The CNI plugin (``daemonSocket`` in
the network configuration) sends the request as it came (the ``CNI_*`` environment and stdin)
to ``POST /cni``, where the daemon runs the plugin's own verbs on its worker
(:func:`serve_cni`), and prints the answer.

The daemon down (its socket absent, or nobody listening): an error naming the socket (CLI: exit
75, CNI: code 11, try again later), since the operator asked for the daemon; in-process instead
only where the operator allows it (``FIREROUTE_SOCKET_FALLBACK=1``, ``"daemonFallback": true``).
A request the daemon may have received is never run again in-process.

HTTP here is a few lines over ``_socket``, not ``http.client`` (61 ms of imports under
``python3 -S``, against 0.2 ms) nor ``socket`` (9 ms, for its enums): a request with a
``Content-Length`` and ``Connection: close``, and an answer read to its end; the answers come
from the daemon's own ``http.server``, held to its ``Content-Length``.
"""

from __future__ import annotations

import os

from fireroute import jsontext
from fireroute.errors import FirerouteError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from fireroute import model
    from fireroute.api import Host

TIMEOUT = 660.0
"""seconds to wait for the daemon's next bytes (its worker gives up on a call at 600 s)"""
EXIT = {400: 2, 403: 77, 404: 4, 409: 3, 503: 75}
"""the CLI's exit code for a daemon's error by its HTTP status, where its kind is none of
fireroute's error classes (a refusal of the daemon's own: framing, the operator's policy)"""
DOWN_EXIT = 75
"""the CLI's exit code when the daemon cannot be reached (as a busy state file: try again)"""
TRY_AGAIN, UNAVAILABLE, BAD_CONFIG = 11, 50, 7  # the CNI spec's codes (cni/protocol.py)


class Unreachable(FirerouteError):
    """Nothing answers on the daemon's socket: nothing was sent."""

    exit_code = DOWN_EXIT

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"the daemon at {path} cannot be reached: {reason}")


class DaemonError(FirerouteError):
    """The daemon's answer to a request it refused or failed: its message and kind."""

    def __init__(self, message: str, kind: str, status: int) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status
        from fireroute import errors

        cls = getattr(errors, kind, None)
        known = isinstance(cls, type) and issubclass(cls, FirerouteError)
        self.exit_code = cls.exit_code if known else EXIT.get(status, 1)  # type: ignore[union-attr]


# -- the wire -------------------------------------------------------------------------------
def call(path: str, method: str, url: str, body: object = None) -> tuple[int, object]:
    """One request to the daemon on ``path``: its status and JSON answer. Unreachable if
    the connection cannot be made; DaemonError if it breaks or the answer is not HTTP."""
    import _socket  # type: ignore[import-not-found]

    data = b"" if body is None else jsontext.dumps(body).encode()
    head = (
        f"{method} {url} HTTP/1.1\r\nHost: fireroute\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(TIMEOUT)
        try:
            s.connect(path)
        except OSError as exc:
            raise Unreachable(path, exc.strerror or str(exc)) from None
        try:
            s.sendall(head.encode() + data)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            raise DaemonError(
                f"the daemon at {path} did not answer: {exc.strerror or exc}", "Unanswered", 0
            ) from None
    finally:
        s.close()
    return _answer(path, b"".join(chunks))


def _answer(path: str, raw: bytes) -> tuple[int, object]:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, _, tail = lines[0].partition(" ")
    status = tail[:3]
    fields = (line.partition(":") for line in lines[1:])
    length = [v.strip() for k, _, v in fields if k.lower() == "content-length"]
    if not (sep and version.startswith("HTTP/1.") and status.isdigit() and len(length) == 1):
        raise DaemonError(f"the daemon at {path} answered no HTTP: {raw[:60]!r}", "Unanswered", 0)
    if not length[0].isdigit() or len(rest) != int(length[0]):
        raise DaemonError(f"the daemon at {path} cut its answer short", "Unanswered", 0)
    try:
        return int(status), jsontext.loads(rest.decode()) if rest.strip() else None
    except ValueError:
        raise DaemonError(f"the daemon at {path} answered no JSON", "Unanswered", 0) from None


def ask(path: str, method: str, url: str, body: object = None) -> object:
    """The daemon's answer to a request it served (200), else its error as DaemonError."""
    status, answer = call(path, method, url, body)
    if status == 200:
        return answer
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        raise DaemonError(f"the daemon at {path} answered {status}", "Unanswered", status)
    raise DaemonError(str(error.get("message")), str(error.get("kind")), status)


def reachable(path: str) -> bool:
    """Does a daemon listen on ``path`` (a connection, no request)?"""
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


# -- a VM's record over the wire ------------------------------------------------------------
def wire(vm: model.Vm) -> dict[str, object]:
    """The VM's record as the state file keeps it (what :func:`unwire` rebuilds)."""
    return {
        "name": vm.name,
        "net": str(vm.net) if vm.net is not None else None,
        "tap": vm.tap,
        "mac": vm.mac,
        "uplink": vm.uplink,
        "options": vm.options.identity(),
        "state": vm.state,
        "net6": str(vm.net6) if vm.net6 is not None else None,
        "netns_name": vm.netns_name,
        "owner": vm.owner,
        "own_gateway6": vm.own_gateway6,
    }


def unwire(data: object) -> model.Vm:
    from ipaddress import IPv4Network, IPv6Network

    from fireroute.model import Options, Vm

    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        raise DaemonError("the daemon's answer carries no record", "Unanswered", 0)
    d = data
    net = IPv4Network(d["net"]) if d["net"] else None
    net6 = IPv6Network(d["net6"]) if d["net6"] else None
    options = Options.from_identity(d["options"])
    vm = Vm(d["name"], net, d["tap"], d["mac"], d["uplink"], options, d["state"], net6)
    vm.netns_name, vm.owner = d["netns_name"], d["owner"]
    vm.own_gateway6 = d.get("own_gateway6") is True  # (a daemon from before: fe80::1)
    return vm


# -- the CLI's door -------------------------------------------------------------------------
def socket_of(args: object) -> str | None:
    """The daemon a command line asks for: ``--daemon PATH``, else ``$FIREROUTE_SOCKET``."""
    path = getattr(args, "daemon", None) or os.environ.get("FIREROUTE_SOCKET") or None
    if path is None:
        return None
    if getattr(args, "state", None):
        raise UsageError(
            "--state names a state file, and the daemon keeps its own: give --state or "
            "--daemon/FIREROUTE_SOCKET, not both"
        )
    if os.environ.get("FIREROUTE_SOCKET_FALLBACK") == "1" and not reachable(path):
        return None  # the operator allows in-process when the daemon is down
    return path


class Done:
    """What the CLI reads of a verb's outcome (as :class:`fireroute.api.Outcome`)."""

    def __init__(self, vms: list[model.Vm]) -> None:
        self.vms, self.commands = vms, ""
        self.warnings: list[str] = []


class DaemonHost:
    """The verbs the CLI's ``up``, ``down``, ``show`` and ``ls`` call on
    :class:`fireroute.Host`, served by the daemon on ``path``; ``up`` sends ``options`` (the
    options the command line gave, by the names of the daemon's body)."""

    def __init__(self, path: str, options: dict[str, object]) -> None:
        self.path, self.options = path, options

    def _vm(self, method: str, name: str, body: object = None) -> model.Vm:
        from fireroute.model import check_vm_name

        check_vm_name(name)  # (as in-process, and before it goes into a path)
        answer = ask(self.path, method, f"/vms/{name}?record=1", body)
        return unwire(answer.get("record") if isinstance(answer, dict) else None)

    def _not_served(self, what: str) -> None:
        raise UsageError(
            f"{what} is not served by the daemon: run it without --daemon and FIREROUTE_SOCKET"
        )

    def bring_up(
        self, names: list[str], options: object, *, skip_conflicts: bool, dry_run: bool, **_: object
    ) -> Done:
        """Each VM by ``PUT /vms/{name}`` with the options the command line gave (``options``,
        checked already, is what in-process would use: unused); all or nothing as in-process: a
        failure takes down the VMs this command brought up, then is raised."""
        if dry_run:
            self._not_served("--dry-run")
        if skip_conflicts:
            self._not_served("--skip-conflicts")
        from fireroute.model import check_vm_name

        for name in names:
            check_vm_name(name)
        body = self.options
        existed = {v.name for v in self.ls()} if len(names) > 1 else set()
        made: list[model.Vm] = []
        try:
            for name in names:
                made.append(self._vm("PUT", name, body))
        except BaseException:
            import contextlib

            for vm in made:  # (one that was up already was a no-op: it stays)
                if vm.name not in existed:
                    with contextlib.suppress(FirerouteError):  # the first failure is told
                        ask(self.path, "DELETE", f"/vms/{vm.name}")
            raise
        return Done(made)

    def take_down(self, names: list[str], *, everything: bool, dry_run: bool) -> Done:
        """Each VM by ``DELETE /vms/{name}`` (``everything``: each the daemon lists); what
        the CLI prints of the outcome is the names removed."""
        if dry_run:
            self._not_served("--dry-run")
        from fireroute.model import check_vm_name

        for name in names:
            check_vm_name(name)
        if everything:
            names = [v.name for v in self.ls()]
        gone = [n for n in names if _removed(ask(self.path, "DELETE", f"/vms/{n}"))]
        return Done([Gone(n) for n in gone])  # type: ignore[misc]

    def ls(self) -> list[model.Vm]:
        answer = ask(self.path, "GET", "/vms?record=1")
        vms = answer if isinstance(answer, list) else []
        return [unwire(v.get("record")) for v in vms if isinstance(v, dict)]

    def show(self, name: str) -> model.Vm:
        return self._vm("GET", name)

    def stats(self, *names: str) -> list[dict[str, object]]:
        rows = ask(self.path, "GET", "/stats")
        order = {n: i for i, n in enumerate(names)}
        mine = [r for r in rows if isinstance(r, dict) and r.get("name") in order]  # type: ignore[attr-defined]
        return sorted(mine, key=lambda r: order[r["name"]])


def _removed(answer: object) -> bool:
    return isinstance(answer, dict) and answer.get("removed") is True


class Gone:
    """A VM ``down`` removed, as far as the CLI prints it: its name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


# -- the CNI plugin's door ------------------------------------------------------------------
def cni(env: Mapping[str, str], stdin: bytes) -> int | None:
    """A CNI call whose configuration names ``daemonSocket``, sent to that daemon and its
    answer printed: the plugin's exit status. None: run it in-process (no daemon named, or
    a configuration the plugin itself must refuse, VERSION (a constant answer), or the daemon
    down and ``daemonFallback`` true). The daemon down: code 11, try again later (STATUS:
    50, ADD cannot work now)."""
    import sys

    command = env.get("CNI_COMMAND")
    if b'"daemonSocket"' not in stdin or command == "VERSION":
        return None
    try:
        conf = jsontext.loads(stdin.decode())
    except (ValueError, RecursionError):  # (UnicodeDecodeError too) the plugin says what
        return None
    path = conf.get("daemonSocket") if isinstance(conf, dict) else None
    if not isinstance(path, str) or not path.startswith("/"):
        return None  # the plugin refuses it, code 7 naming the key
    assert isinstance(conf, dict)
    version = conf.get("cniVersion")
    version = version if isinstance(version, str) and version else "1.1.0"
    try:
        code, out = _send_cni(path, env, stdin, version)
    except Unreachable as exc:
        if conf.get("daemonFallback") is True:
            return None
        why = UNAVAILABLE if command == "STATUS" else TRY_AGAIN
        code, out = 1, _cni_error(why, "the fireroute daemon is not running", str(exc), version)
    if out is not None:
        sys.stdout.write(jsontext.dumps(out) + "\n")
    return code


def _send_cni(path: str, env: Mapping[str, str], stdin: bytes, version: str) -> tuple[int, object]:
    """The plugin's exit status and output as the daemon on ``path`` gave them, or its
    failure as a CNI error (Unreachable: nothing listens there; nothing was sent)."""
    cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
    try:
        status, answer = call(path, "POST", "/cni", {"env": cni_env, "stdin": stdin.decode()})
    except DaemonError as exc:
        return 1, _cni_error(TRY_AGAIN, "the fireroute daemon failed", str(exc), version)
    if status == 200 and isinstance(answer, dict) and isinstance(answer.get("code"), int):
        return int(answer["code"]), answer.get("output")
    error = answer.get("error") if isinstance(answer, dict) else None
    message = str(error.get("message")) if isinstance(error, dict) else f"status {status}"
    code = TRY_AGAIN if status == 503 else BAD_CONFIG if status in (400, 413) else UNAVAILABLE
    return 1, _cni_error(code, "the fireroute daemon refused the request", message, version)


def _cni_error(code: int, msg: str, details: str, version: str) -> dict[str, object]:
    return {"cniVersion": version, "code": code, "msg": msg, "details": details}


def serve_cni(host: Host, env: object, stdin: object) -> dict[str, object]:
    """The daemon's side of ``POST /cni``: the plugin's verbs on the daemon's own ``host``
    (its state file: a configuration naming another ``state`` is refused, code 7); its exit
    status and what it printed (``code``, ``output``)."""
    from fireroute.cni.plugin import answer

    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise UsageError('"env" must be an object of strings')
    if not isinstance(stdin, str):
        raise UsageError('"stdin" must be a string')
    try:
        conf = jsontext.loads(stdin)
    except (ValueError, RecursionError):  # the plugin refuses it, as in-process
        conf = None
    state = conf.get("state") if isinstance(conf, dict) else None
    if isinstance(state, str) and os.path.abspath(state) != os.path.abspath(host.state):
        details = f'"state" is {state}, and the daemon keeps {host.state}'
        version = conf.get("cniVersion") if isinstance(conf, dict) else None
        version = version if isinstance(version, str) and version else "1.1.0"
        error = _cni_error(BAD_CONFIG, "invalid network configuration", details, version)
        return {"code": 1, "output": error}
    code, output = answer(env, stdin.encode(), host=host)
    return {"code": code, "output": output}
