"""Execute a plan: few processes, inverses registered as steps succeed, unwind on failure.

``apply_all`` is all-or-nothing (used by ``up``); ``apply_best_effort`` keeps going past
failures and reports every one at the end (used by ``down``), treating "already gone" as done.

Test hook: ``FIREROUTE_FAULT=fail@K`` raises, and ``kill@K`` SIGKILLs the process, right after
the K-th process (1-based) of this invocation has run.
"""

from __future__ import annotations

import os

from fireroute.errors import AlreadyExists, FirerouteError, KernelError, PartialFailure
from fireroute.kernel.run import SIGKILL, Child, Done, Result, Runner, launch, run
from fireroute.plan.steps import (
    IP,
    IPTABLES,
    NFT,
    SYSCTL,
    Plan,
    Step,
    in_netns,
    iptables_input,
    sysctl_path,
    waves,
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

    # -- one process per group, the groups of a wave at once -------------------------------
    def _launch(self, argv: list[str], stdin: str | None) -> Child | Done:
        return launch(self.runner, argv, stdin)

    def _start_group(self, group: list[Step], force: bool) -> Child | Done | None:
        """Start a group's process; None for host sysctls (written in-process, see below)."""
        tool, ns = group[0].tool, group[0].netns
        if tool == IP:
            argv = ["ip", "-force", "-batch", "-"] if force else ["ip", "-batch", "-"]
            return self._launch(in_netns(ns, argv), "".join(s.text + "\n" for s in group))
        if tool == NFT:
            script = "".join(s.text if s.text.endswith("\n") else s.text + "\n" for s in group)
            return self._launch(in_netns(ns, ["nft", "-f", "-"]), script)
        if tool == IPTABLES:
            argv = in_netns(ns, ["iptables-nft-restore", "--noflush"])
            return self._launch(argv, iptables_input(group))
        if tool == SYSCTL and ns is not None:
            argv = ["ip", "netns", "exec", ns, "sysctl", "-qw", *(st.text for st in group)]
            return self._launch(argv, None)
        if tool == SYSCTL:
            return None
        raise AssertionError(tool)  # pragma: no cover - planners only emit known tools

    def _run_wave(self, wave: list[list[Step]], force: bool) -> list[dict[int, str]]:
        """Run a wave's groups together; {index in group: error text} per group. Host sysctls
        are written once the wave's processes have finished: they may name a device that the
        wave's ``ip`` group creates."""
        started = [self._start_group(group, force) for group in wave]
        out: list[dict[int, str]] = []
        for group, job in zip(wave, started, strict=True):
            if job is None:
                out.append({})
                continue
            res = job.wait()
            if group[0].tool == IP:
                out.append(_ip_errors(res, len(group)))
            else:
                out.append({} if res.rc == 0 else {0: res.err or res.out})
        for k, (group, job) in enumerate(zip(wave, started, strict=True)):
            if job is None:
                for i, st in enumerate(group):
                    for _, text in _write_sysctl(st.text).items():
                        out[k][i] = text
        return out

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
        for wave in waves(plan.steps):
            results = self._run_wave(wave, force=False)
            failed: KernelError | None = None
            for group, errors in zip(wave, results, strict=True):
                if not errors:
                    for s in group:
                        undo.extend(s.undo)
                    continue
                first = min(errors)
                if group[0].tool == IP:  # ip -batch stops at the first failing line
                    for s in group[:first]:
                        undo.extend(s.undo)
                elif group[0].tool == SYSCTL and group[0].netns is None:  # one by one
                    for i, s in enumerate(group):
                        if i not in errors:
                            undo.extend(s.undo)
                if failed is None:
                    step = group[first]
                    kind = KernelError
                    if step.exclusive and "File exists" in errors[first]:
                        kind = AlreadyExists
                    failed = kind(step.what, errors[first], step.vm)
            try:
                for _ in wave:
                    self._fault_point()
            except KernelError as exc:  # injected fault: everything so far is undone
                failed = failed or exc
            if failed is not None:
                self._unwind(undo, failed)
                raise failed

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
            for wave in waves(plan.steps):
                for group, errors in zip(wave, self._run_wave(wave, force=True), strict=True):
                    self._fault_point()
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
