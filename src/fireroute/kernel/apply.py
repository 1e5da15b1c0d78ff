"""Execute a plan: few processes, inverses registered as steps succeed, unwind on failure.

``apply_all`` is all-or-nothing (used by ``up``); ``apply_best_effort`` keeps going past
failures and reports every one at the end (used by ``down``), treating "already gone" as done.
A group's failures are :class:`Failure` objects: the message and its kernel/kinds.py kind, found
once, where the failure is known (a process's message by ``classify``; an in-process
executor gives the kind of the errno, as a :class:`Ran`). An exclusive step that fails as
``exists`` raises AlreadyExists; a removal that fails as ``missing`` is done.

Test hook: ``FIREROUTE_FAULT=fail@K`` raises, and ``kill@K`` SIGKILLs the process, right after
the K-th process (1-based) of this invocation has run.
"""

from __future__ import annotations

import os

from fireroute.errors import AlreadyExists, FirerouteError, KernelError, PartialFailure
from fireroute.kernel.kinds import EXISTS, MISSING, classify
from fireroute.kernel.run import SIGKILL, Child, Done, Result, Runner, launch, run
from fireroute.plan.steps import (
    BATCHED,
    CALLER,
    CONNTRACK,
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


class Failure:
    """One failed step: ``text`` (the message a person reads) and its ``kind``
    (kernel/kinds.py)."""

    __slots__ = ("text", "kind")

    def __init__(self, text: str, kind: str) -> None:
        self.text = text
        self.kind = kind

    @classmethod
    def of(cls, text: str) -> Failure:
        """A process's message, classified."""
        return cls(text, classify(text))

    def __repr__(self) -> str:
        return f"Failure({self.text!r}, {self.kind!r})"


class Ran:
    """A group run without a process, shaped like a started Child: its failures by index
    in the group (empty when every step worked)."""

    __slots__ = ("errors",)

    def __init__(self, errors: dict[int, Failure]) -> None:
        self.errors = errors

    def wait(self) -> Ran:
        return self


class InjectedFault(KernelError):
    """FIREROUTE_FAULT=fail@K: raised right after the K-th process, as if it had failed."""


class Executor:
    def __init__(self, runner: Runner = run, fault: str | None = None) -> None:
        self.runner = runner
        self.fault = fault if fault is not None else os.environ.get("FIREROUTE_FAULT", "")
        self.count = 0

    # -- one process per group, the groups of a wave at once -------------------------------
    def _launch(self, argv: list[str], stdin: str | None) -> Child | Done:
        return launch(self.runner, argv, stdin)

    def _start_group(self, group: list[Step], force: bool) -> Child | Done | Ran | None:
        """Start a group's process; None for host sysctls (written in-process, see below)."""
        tool, ns = group[0].tool, group[0].netns
        if tool in BATCHED:
            argv = [tool, "-force", "-batch", "-"] if force else [tool, "-batch", "-"]
            lines = "".join(s.text + "\n" for s in group)
            if ns is not None and f" netns {CALLER}" in lines:
                lines = lines.replace(f" netns {CALLER}", f" netns {os.getpid()}")
            return self._launch(in_netns(ns, argv), lines)
        if tool == NFT:
            script = "".join(s.text if s.text.endswith("\n") else s.text + "\n" for s in group)
            return self._launch(in_netns(ns, ["nft", "-f", "-"]), script)
        if tool == IPTABLES:
            argv = in_netns(ns, ["iptables-nft-restore", "--noflush"])
            return self._launch(argv, iptables_input(group))
        if tool == CONNTRACK:  # one command per step, one after another
            results = [
                self.runner(in_netns(ns, ["conntrack", *st.text.split()]), None) for st in group
            ]
            failed = [r for r in results if r.rc != 0 and "flow entries have been" not in r.err]
            return Done(failed[0] if failed else Result(0, "", ""))
        if tool == SYSCTL and ns is not None:
            return self._launch(in_netns(ns, ["sysctl", "-qw", *(st.text for st in group)]), None)
        if tool == SYSCTL:
            return None
        raise AssertionError(tool)  # pragma: no cover - planners only emit known tools

    def _run_wave(
        self, wave: list[list[Step]], force: bool, all_or_nothing: bool
    ) -> tuple[list[dict[int, Failure] | None], FirerouteError | None]:
        """Run a wave's groups together: per group, {index in group: failure}, or None for
        a group that did not run; and what stopped the wave early (a program that could not
        be started, an injected fault), if anything. Every started child is waited for.

        Host sysctls are written once the wave's processes have finished (they may name a
        device the wave's ``ip`` group creates) and, when ``all_or_nothing``, only if every
        process succeeded: a failed ``tuntap add`` must not leave a sysctl written on a
        device of that name that is not ours."""
        out: list[dict[int, Failure] | None] = [None] * len(wave)
        started: list[tuple[int, Child | Done | Ran | None]] = []
        stop: FirerouteError | None = None
        for k, group in enumerate(wave):
            try:
                started.append((k, self._start_group(group, force)))
            except FirerouteError as exc:  # e.g. MissingTool
                stop = exc
                break
            except OSError as exc:  # e.g. out of file descriptors
                stop = KernelError(group[0].what, str(exc), group[0].vm)
                break
        for k, job in started:
            if job is None:
                continue
            res = job.wait()
            group = wave[k]
            out[k] = res.errors if isinstance(res, Ran) else _errors(res, group)
            try:
                self._fault_point()
            except InjectedFault as exc:  # the wave's other children still finish
                stop = stop or exc
        ran_clean = stop is None and all(not out[k] for k, job in started if job is not None)
        for k, job in started:
            if job is None and (ran_clean or not all_or_nothing):
                errors: dict[int, Failure] = {}
                for i, st in enumerate(wave[k]):
                    for _, text in _write_sysctl(st.text).items():
                        errors[i] = Failure.of(text)
                out[k] = errors
                try:
                    self._fault_point()
                except InjectedFault as exc:
                    stop = stop or exc
        return out, stop

    def _fault_point(self) -> None:
        self.count += 1
        if not self.fault:
            return
        kind, _, at = self.fault.partition("@")
        if at.isdigit() and int(at) == self.count:
            if kind == "kill":
                os.kill(os.getpid(), SIGKILL)
            raise InjectedFault("continue", f"injected fault after process {self.count}")

    # -- all or nothing --------------------------------------------------------------------
    def apply_all(self, plan: Plan) -> None:
        undo: list[Step] = []
        for wave in waves(plan.steps):
            results, stop = self._run_wave(wave, force=False, all_or_nothing=True)
            failed: FirerouteError | None = None
            for group, errors in zip(wave, results, strict=True):
                if errors is None:  # did not run
                    continue
                if not errors:
                    for s in group:
                        undo.extend(s.undo)
                    continue
                first = min(errors)
                if group[0].tool in BATCHED:  # -batch stops at the first failing line
                    for s in group[:first]:
                        undo.extend(s.undo)
                elif group[0].tool == SYSCTL and group[0].netns is None:  # one by one
                    for i, s in enumerate(group):
                        if i not in errors:
                            undo.extend(s.undo)
                elif group[0].tool == IPTABLES:  # the tables committed before the failure
                    for s in _ipt_committed(group, first):
                        undo.extend(s.undo)
                if failed is None:
                    step = group[first]
                    kind = KernelError
                    if step.exclusive and errors[first].kind == EXISTS:
                        kind = AlreadyExists
                    failed = kind(step.what, errors[first].text, step.vm)
            failed = failed or stop
            if failed is not None:
                if not self._unwind(undo, failed) and isinstance(failed, AlreadyExists):
                    # not cleanly undone: no caller may take this for "nothing changed"
                    plain = KernelError(failed.action, failed.detail, failed.vm)
                    plain.args = failed.args
                    failed = plain
                raise failed

    def _unwind(self, undo: list[Step], cause: FirerouteError) -> bool:
        """Undo, newest first; False (and ``cause`` says why) if some of it failed."""
        if not undo:
            return True
        try:
            self.apply_best_effort(Plan(list(reversed(undo))), count_faults=False)
        except PartialFailure as failed:
            cause.args = (f"{cause.args[0]} (and rollback failed: {failed})",)
            return False
        return True

    # -- keep going ------------------------------------------------------------------------
    def apply_best_effort(self, plan: Plan, count_faults: bool = True) -> None:
        failures: list[FirerouteError] = []
        saved = self.fault
        if not count_faults:
            self.fault = ""
        try:
            for wave in waves(plan.steps):
                results, stop = self._run_wave(wave, force=True, all_or_nothing=False)
                if stop is not None:
                    if isinstance(stop, InjectedFault):
                        raise stop  # it stops here, as a crash would
                    failures.append(stop)
                for group, errors in zip(wave, results, strict=True):
                    for i, err in sorted((errors or {}).items()):
                        if group[0].tool != NFT and err.kind == MISSING:
                            continue  # already gone: done
                        step = group[i]
                        failures.append(KernelError(step.what, err.text, step.vm))
        finally:
            self.fault = saved
        if failures:
            raise PartialFailure(failures)


def _errors(res: Result, group: list[Step]) -> dict[int, Failure]:
    """A group's process's failures: {index in group: failure}."""
    if group[0].tool in BATCHED:
        return _ip_errors(res, len(group))
    if res.rc == 0:
        return {}
    at = 0
    if group[0].tool == NFT:
        at = _nft_failed(res.err, group)
    elif group[0].tool == IPTABLES:
        at = _ipt_failed(res.err, group)
    return {at: Failure.of(res.err or res.out)}


def _nft_failed(err: str, group: list[Step]) -> int:
    """The step of an ``nft -f`` group (one script, one transaction) whose lines hold the
    first line nft names (``/dev/stdin:LINE:``): an ip table's step and an ip6 one's run in
    one process, and an exclusive step's ``File exists`` is its own (AlreadyExists), not the
    group's first step's (found by the kernel property test). 0 when nft names none."""
    at = err.find("/dev/stdin:")
    digits = err[at + 11 :].partition(":")[0] if at >= 0 else ""
    if not digits.isdigit():
        return 0
    line, end = int(digits), 0
    for i, st in enumerate(group):
        end += st.text.count("\n") + (not st.text.endswith("\n"))
        if line <= end:
            return i
    return 0


def _ipt_sections(group: list[Step]) -> list[list[int]]:
    """The indexes of a group's iptables steps by table, in the order of their sections in
    iptables-nft-restore's input (:func:`iptables_input`)."""
    tables: dict[str, list[int]] = {}
    for i, st in enumerate(group):
        tables.setdefault(st.table, []).append(i)
    return list(tables.values())


def _ipt_failed(err: str, group: list[Step]) -> int:
    """The step of an iptables-nft-restore group at the line its message names: the rule on
    it, or for its table's ``*table`` or ``COMMIT`` line the table's first step; 0 when it
    names none. iptables-nft-restore (1.8) names it three ways: ``Error occurred at line: N``
    (a line it could not take), ``line N: RULE_APPEND failed (...)`` (the kernel refused the
    table's commit) and ``line N failed: ...`` (a rule to delete not there)."""
    line = _ipt_line(err)
    if line is None:
        return 0
    at = 0
    for indexes in _ipt_sections(group):
        at += 1  # (*table)
        for i in indexes:
            first, at = at + 1, at + group[i].text.count("\n") + 1
            if first <= line <= at:
                return i
        at += 1  # (COMMIT)
        if line <= at:
            return indexes[0]
    return 0


def _ipt_line(err: str) -> int | None:
    """The input line an iptables-nft-restore message names (see :func:`_ipt_failed`)."""
    for marker in ("Error occurred at line: ", "line "):
        at = err.find(marker)
        while at >= 0:
            rest = err[at + len(marker) :]
            digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
            word = at == 0 or err[at - 1] in " \n"  # (not "deadline 5")
            if word and digits and rest[len(digits) : len(digits) + 1] in (":", " ", "\n", ""):
                return int(digits)
            at = err.find(marker, at + 1)
    return None


def _ipt_committed(group: list[Step], failed: int) -> list[Step]:
    """The steps of a failed iptables-nft-restore group whose tables it committed: it commits
    each table's section at its COMMIT, in order, and stops at the first that fails (the
    table of the step ``failed``, :func:`_ipt_failed`)."""
    out: list[Step] = []
    for indexes in _ipt_sections(group):
        if failed in indexes:
            break
        out += [group[i] for i in indexes]
    return out


def _ip_errors(res: Result, n: int) -> dict[int, Failure]:
    """Map ``ip -batch`` stderr to the failing lines (0-based) with their messages."""
    if res.rc == 0 and "Command failed" not in res.err:
        return {}
    errors: dict[int, Failure] = {}
    pending: list[str] = []
    for line in res.err.splitlines():
        found = failed_lines(line)
        if found:
            idx = found[0] - 1
            errors[min(max(idx, 0), n - 1)] = Failure.of(" ".join(pending).strip() or line)
            pending = []
        elif line.strip():
            pending.append(line.strip())
    if not errors:
        errors[0] = Failure.of(res.err.strip() or f"ip exited with status {res.rc}")
    return errors


def _write_sysctl(text: str) -> dict[int, str]:
    """``key=value`` written (without a file object: ~20 us less a write, and a batch of VMs
    with IPv6 writes two a tap); {0: the message} when refused."""
    key, _, value = text.partition("=")
    try:
        fd = os.open(sysctl_path(key), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, (value + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        return {0: f"{sysctl_path(key)}: {exc.strerror}"}
    return {}


def read_sysctl(key: str) -> str:
    with open(sysctl_path(key)) as f:
        return f.read().strip()
