"""Run one program: argv list (never a shell string), optional stdin, a timeout.

No ``subprocess``: importing it (with signal, threading, selectors, contextlib and enum)
costs ~11 ms of a per-VM command's start-up, more than the programs it runs. Here a child is
started with ``posix_spawn``; its stdin, stdout and stderr are anonymous in-memory files
(memfd), so a large batch in and a large listing out can never deadlock on a full pipe, and
several children can run at once (``start`` then ``Child.wait``).
"""

from __future__ import annotations

import os

from fireroute.errors import MissingTool

TYPE_CHECKING = False  # typing itself costs ~3 ms to import
PACKAGES = {
    "ip": "iproute2",
    "nft": "nftables",
    "iptables-nft-restore": "iptables",
    "iptables-nft-save": "iptables",
}


class Result:
    __slots__ = ("rc", "out", "err")

    def __init__(self, rc: int, out: str, err: str) -> None:
        self.rc = rc
        self.out = out
        self.err = err


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    Runner = Callable[[list[str], str | None], Result]
else:
    Runner = object  # annotations only


def read_value(path: str) -> str | None:
    """A /proc or /sys value, stripped; None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


SIGKILL = 9
DEFAULT_SIGNALS = (13, 25)  # SIGPIPE, SIGXFSZ (Linux numbers; the signal module costs ~2 ms)
HELD_FDS: set[int] = set()
"""File descriptors every child inherits: the state lock, so that a child that outlives a
killed fireroute (an ``ip -batch`` half-way through) keeps the lock until it has finished,
and gc can never race it."""


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name)
    if data:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class Child:
    """A started program; ``wait`` gives its Result (once)."""

    __slots__ = ("argv", "pid", "fds", "timeout")

    def __init__(
        self,
        argv: list[str],
        stdin: str | None,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = argv
        self.timeout = timeout
        self.fds: list[int] = []
        try:
            self.fds.append(
                _memfd("stdin", stdin.encode()) if stdin else os.open(os.devnull, os.O_RDONLY)
            )
            self.fds += [_memfd("stdout"), _memfd("stderr")]
        except BaseException:
            self._close()
            raise
        # dup2 onto 0/1/2 clears close-on-exec there; descriptors this process inherited
        # open are closed in the child (as subprocess's close_fds does); the HELD_FDS are made
        # inheritable for exactly this call
        actions: list[tuple[int, ...]] = [
            (os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(self.fds)
        ]
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited() if fd not in HELD_FDS]
        held = [fd for fd in HELD_FDS if not os.get_inheritable(fd)]
        for fd in held:
            os.set_inheritable(fd, True)
        try:
            path = _path_of(argv[0])
            # Python ignores SIGPIPE and SIGXFSZ; the child gets the default actions back
            self.pid = os.posix_spawn(
                path,
                argv,
                os.environ if env is None else env,
                file_actions=actions,
                setsigdef=DEFAULT_SIGNALS,
            )
        except FileNotFoundError:
            self._close()
            pkg = PACKAGES.get(argv[0], argv[0])
            raise MissingTool(f"{argv[0]} not found: install the {pkg} package") from None
        except BaseException:
            self._close()
            raise
        finally:
            for fd in held:
                os.set_inheritable(fd, False)

    def _close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def wait(self) -> Result:
        try:
            if not _wait_for(self.pid, self.timeout):
                os.kill(self.pid, SIGKILL)
                os.waitpid(self.pid, 0)
                return Result(124, "", f"{self.argv[0]} timed out after {self.timeout:.0f}s")
            _, status = os.waitpid(self.pid, 0)
            return Result(os.waitstatus_to_exitcode(status), *map(_read_all, self.fds[1:]))
        finally:
            self._close()


_PATHS: dict[str, str] = {}
_INHERITED: list[int] | None = None


def _inherited() -> list[int]:
    """Descriptors above 2 that this process was started with open and inheritable (our own
    are opened close-on-exec): looked up once."""
    global _INHERITED
    if _INHERITED is None:
        try:
            fds = [int(x) for x in os.listdir("/proc/self/fd") if int(x) > 2]
        except OSError:
            fds = []
        found = []
        for fd in fds:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the listing's own descriptor, closed by now
                pass
        _INHERITED = found
    return _INHERITED


def _path_of(program: str) -> str:
    """The program's file, found on PATH once per process: a search by the spawned child
    (posix_spawnp) tries each PATH entry with execve, ~0.6 ms more per process here."""
    if "/" in program:
        return program
    path = _PATHS.get(program) or which(program)
    if path is None:
        raise FileNotFoundError(program)
    _PATHS[program] = path
    return path


def _wait_for(pid: int, timeout: float) -> bool:
    """True when the child has exited within ``timeout`` seconds (it is not reaped)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # no pidfd (old kernel): wait without a limit
        return True
    try:
        import select  # a C module: no start-up cost worth avoiding

        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))
    finally:
        os.close(pidfd)


def start(argv: list[str], stdin: str | None = None, timeout: float = 60.0) -> Child:
    return Child(argv, stdin, timeout)


def run(
    argv: list[str],
    stdin: str | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> Result:
    """``argv`` to its end (``env``: the environment, default this process's)."""
    return Child(argv, stdin, timeout, env).wait()


class Done:
    """A result already in hand, shaped like a started Child."""

    __slots__ = ("result",)

    def __init__(self, result: Result) -> None:
        self.result = result

    def wait(self) -> Result:
        return self.result


def launch(runner: Runner, argv: list[str], stdin: str | None = None) -> Child | Done:
    """Start ``argv`` now and wait for it later when ``runner`` is the real one; a scripted
    runner (tests) answers at once."""
    if runner is run:
        return start(argv, stdin)
    return Done(runner(argv, stdin))  # type: ignore[operator]


def which(tool: str) -> str | None:
    """``shutil.which`` without importing shutil (~6 ms on the per-VM path)."""
    for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep):
        path = os.path.join(d, tool)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None
