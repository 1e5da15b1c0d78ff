"""Execute a plan: few processes, inverses registered as steps succeed, unwind on failure.

``apply_all`` is all-or-nothing (used by ``up``); ``apply_best_effort`` keeps going past
failures and reports every one at the end (used by ``down``), treating "already gone" as done.

Test hook: ``FIREROUTE_FAULT=fail@K`` raises, and ``kill@K`` SIGKILLs the process, right after
the K-th process (1-based) of this invocation has run.
"""

from __future__ import annotations

import os

from fireroute.errors import FirerouteError, KernelError, PartialFailure
from fireroute.kernel.run import SIGKILL, Result, Runner, run
from fireroute.plan.steps import (
    IP,
    IPTABLES,
    NFT,
    SYSCTL,
    Plan,
    Step,
    groups,
    in_netns,
    iptables_input,
    sysctl_path,
)

FAILED = "Command failed -:"


def failed_lines(err: str) -> list[int]:
    """The 1-based batch line numbers ``ip -batch -`` reports as failed in its stderr."""
    out = []
    for line in err.splitlines():
        _, found, rest = line.partition(FAILED)
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        if found and digits:
            out.append(int(digits))
    return out


GONE = (
    "Cannot find device",
    "does not exist",
    "No such device",
    "No such file or directory",
    "Bad rule (does a matching rule exist",
)


class Executor:
    def __init__(self, runner: Runner = run, fault: str | None = None) -> None:
        self.runner = runner
        self.fault = fault if fault is not None else os.environ.get("FIREROUTE_FAULT", "")
        self.count = 0

    # -- one process per group -------------------------------------------------------------
    def _run_group(self, group: list[Step], force: bool) -> dict[int, str]:
        """Run a group; return {index in group: error text} for the steps that failed."""
        tool, ns = group[0].tool, group[0].netns
        if tool == IP:
            argv = ["ip", "-force", "-batch", "-"] if force else ["ip", "-batch", "-"]
            res = self.runner(in_netns(ns, argv), "".join(s.text + "\n" for s in group))
            errors = _ip_errors(res, len(group))
        elif tool == NFT:
            script = "".join(s.text if s.text.endswith("\n") else s.text + "\n" for s in group)
            res = self.runner(in_netns(ns, ["nft", "-f", "-"]), script)
            errors = {} if res.rc == 0 else {0: res.err or res.out}
        elif tool == IPTABLES:
            res = self.runner(
                in_netns(ns, ["iptables-nft-restore", "--noflush"]), iptables_input(group)
            )
            errors = {} if res.rc == 0 else {0: res.err or res.out}
        elif tool == SYSCTL and ns is not None:
            argv = ["ip", "netns", "exec", ns, "sysctl", "-qw", *(st.text for st in group)]
            res = self.runner(argv, None)
            errors = {} if res.rc == 0 else {0: res.err or res.out}
        elif tool == SYSCTL:
            errors = {}
            for i, st in enumerate(group):
                for _, text in _write_sysctl(st.text).items():
                    errors[i] = text
        else:  # pragma: no cover - planners only emit known tools
            raise AssertionError(tool)
        self._fault_point()
        return errors

    def _fault_point(self) -> None:
        self.count += 1
        if not self.fault:
            return
        kind, _, at = self.fault.partition("@")
        if at.isdigit() and int(at) == self.count:
            if kind == "kill":
                os.kill(os.getpid(), SIGKILL)
            raise KernelError("continue", f"injected fault after process {self.count}")

    # -- all or nothing --------------------------------------------------------------------
    def apply_all(self, plan: Plan) -> None:
        undo: list[Step] = []
        for group in groups(plan.steps):
            try:
                errors = self._run_group(group, force=False)
            except KernelError as exc:  # injected fault: the group itself succeeded
                for s in group:
                    undo.extend(s.undo)
                self._unwind(undo, exc)
                raise
            if not errors:
                for s in group:
                    undo.extend(s.undo)
                continue
            first = min(errors)
            if group[0].tool == IP:  # ip -batch stops at the first failing line
                for s in group[:first]:
                    undo.extend(s.undo)
            elif group[0].tool == SYSCTL and group[0].netns is None:  # written one by one
                for i, s in enumerate(group):
                    if i not in errors:
                        undo.extend(s.undo)
            step = group[first]
            exc = KernelError(step.what, errors[first], step.vm)
            self._unwind(undo, exc)
            raise exc

    def _unwind(self, undo: list[Step], cause: FirerouteError) -> None:
        if not undo:
            return
        try:
            self.apply_best_effort(Plan(list(reversed(undo))), count_faults=False)
        except PartialFailure as failed:
            cause.args = (f"{cause.args[0]} (and rollback failed: {failed})",)

    # -- keep going ------------------------------------------------------------------------
    def apply_best_effort(self, plan: Plan, count_faults: bool = True) -> None:
        failures: list[FirerouteError] = []
        saved = self.fault
        if not count_faults:
            self.fault = ""
        try:
            for group in groups(plan.steps):
                errors = self._run_group(group, force=True)
                for i, text in sorted(errors.items()):
                    if any(g in text for g in GONE) and group[0].tool != NFT:
                        continue
                    step = group[i]
                    failures.append(KernelError(step.what, text, step.vm))
        finally:
            self.fault = saved
        if failures:
            raise PartialFailure(failures)


def _ip_errors(res: Result, n: int) -> dict[int, str]:
    """Map ``ip -batch`` stderr to the failing lines (0-based) with their messages."""
    if res.rc == 0 and "Command failed" not in res.err:
        return {}
    errors: dict[int, str] = {}
    pending: list[str] = []
    for line in res.err.splitlines():
        found = failed_lines(line)
        if found:
            idx = found[0] - 1
            errors[min(max(idx, 0), n - 1)] = " ".join(pending).strip() or line
            pending = []
        elif line.strip():
            pending.append(line.strip())
    if not errors:
        errors[0] = res.err.strip() or f"ip exited with status {res.rc}"
    return errors


def _write_sysctl(text: str) -> dict[int, str]:
    key, _, value = text.partition("=")
    try:
        with open(sysctl_path(key), "w") as f:
            f.write(value + "\n")
    except OSError as exc:
        return {0: f"{sysctl_path(key)}: {exc.strerror}"}
    return {}


def read_sysctl(key: str) -> str:
    with open(sysctl_path(key)) as f:
        return f.read().strip()
