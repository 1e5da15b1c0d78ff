"""One error tree for the whole project.

Every failure a user can meet is a :class:`FirerouteError`; the CLI prints ``str(err)`` as one
line and exits with ``err.exit_code``. Callers branch on the type, never on the text.
"""

from __future__ import annotations


class FirerouteError(Exception):
    """Base class: a failure explained in one line."""

    exit_code = 1


class UsageError(FirerouteError):
    """Bad input: a name, option or value that cannot be used. Nothing was changed."""

    exit_code = 2


class PermissionDenied(FirerouteError):
    """The caller lacks a privilege (root / CAP_NET_ADMIN)."""

    exit_code = 77


class MissingTool(FirerouteError):
    """A program fireroute drives (nft, iptables-nft-restore, ip) is not installed."""

    exit_code = 69


class ConflictError(FirerouteError):
    """The request clashes with what exists: another VM, a host address, a foreign object."""

    exit_code = 3


class PoolExhausted(FirerouteError):
    """No free block is left in the address pool."""

    exit_code = 3


class NotFound(FirerouteError):
    """The named VM is not known to the state file."""

    exit_code = 4


class Busy(FirerouteError):
    """Another fireroute process held the state lock for longer than we were willing to wait."""

    exit_code = 75


class StateError(FirerouteError):
    """The state file is unreadable, corrupt, or from a newer fireroute."""

    exit_code = 5


class KernelError(FirerouteError):
    """A kernel-facing command failed. Carries what was being done, to what, for which VM."""

    def __init__(self, action: str, detail: str, vm: str | None = None) -> None:
        self.action = action
        self.detail = " / ".join(
            line.strip()
            for line in detail.strip().splitlines()
            if line.strip() and set(line.strip()) != {"^"}
        )
        self.vm = vm
        where = f' for vm "{vm}"' if vm else ""
        super().__init__(f"cannot {action}{where}: {self.detail}")


class AlreadyExists(KernelError):
    """A step that creates its object exclusively found one of that name already there (and,
    being atomic, changed nothing)."""


class FirecrackerFailed(FirerouteError):
    """Firecracker refused a request, or could not be reached or understood; its own
    ``fault_message`` is in the text with what was sent. Exit 1, or, when an ``up`` that a
    failed attach rolled back failed on bad input, that failure's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PartialFailure(FirerouteError):
    """A removal went on past failures; every failure is listed."""

    def __init__(self, failures: list[FirerouteError]) -> None:
        self.failures = failures
        text = "; ".join(str(f) for f in failures)
        super().__init__(f"{len(failures)} step(s) failed: {text}")
