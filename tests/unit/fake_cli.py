"""The real CLI (``fireroute.cli.main``), in-process, over the fake kernel (kernel/fake.py):
the verbs' own code from the argument parser to the executor, with the host replaced.

- Every ``fireroute.Host`` (what each CLI verb makes) gets a manager whose runner answers
  the reads the verbs make from the fake (tests/unit/test_up_decisions.py ``UpHost``) and
  whose executor is :class:`FakeExecutor`: the real executor (kernel/apply.py: groups,
  waves, all or nothing, unwinding, the fault hook's count) with each group's operations
  applied to the fake as one process would apply them.
- check, restore, gc and teardown read the whole host through kernel/read.py ``read``; here
  that read is the fake's objects as they stand (:func:`current`): the reader's parsing of
  program output is tested against recordings (tests/unit/test_read.py) and the fake against
  the kernel (tests/kernel/test_fake_parity.py), not here.
- Forwarding's values (IPv4's and IPv6's) and their per-namespace records (kernel/forwarding.py,
  files under /run) are the fake's; so is every sysctl read (:meth:`FakeCli.sysctl`).
- ``kill@K``: a real SIGKILL runs no handler of the dying process, so the verb runs in a
  forked child; at the K-th group it sends the fake's objects back and exits at once
  (:meth:`FakeCli.fireroute`), as the kernel keeps what a killed process made.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import pickle
from dataclasses import dataclass
from unittest import mock

from fireroute.kernel import apply, forwarding, observe, scope
from fireroute.kernel.fake import Failed, Fake
from fireroute.kernel.kinds import OK
from fireroute.kernel.read import Current
from fireroute.kernel.run import Done, Result
from fireroute.plan.steps import CONNTRACK, NFT, SYSCTL
from fireroute.state.store import _LOCK_FDS
from fireroute.want.objects import FORWARD6_KEY, FORWARD_KEY, Addr, Link
from fireroute.want.tables import TABLE_COMMENT
from tests.unit import fake_text
from tests.unit.test_up_decisions import UpHost

UPLINK = "up0"
KILLED = 137
"""the exit status a SIGKILLed child gets from a shell (the kernel run accepts it and -9)"""


@dataclass
class Proc:
    """What a CLI run gave, as ``subprocess.CompletedProcess`` has it."""

    returncode: int
    stdout: str
    stderr: str


class Reads(UpHost):
    """The reads of up and down (UpHost's): an ``ip -j -batch`` of any of its lines (a
    route's FIB match, a link by name, master or group; no neighbour is known)."""

    def __call__(self, argv: list[str], stdin: str | None = None) -> Result:
        if argv[:2] != ["ip", "-j"]:
            return super().__call__(argv, stdin)
        out, err = [], []
        for n, line in enumerate((stdin or "").splitlines(), 1):
            if line.startswith("neigh show"):
                res = Result(0, "[]\n", "")
            elif line.startswith("route "):
                res = self.fake.ip_json(argv, line + "\n")
            else:
                res = self._ip(line + "\n")
            out.append(res.out.strip())
            if res.rc:
                err.append(f"Command failed -:{n}")
        return Result(1 if err else 0, "\n".join(out) + "\n", "\n".join(err))


class FakeExecutor(apply.Executor):
    """kernel/apply.py's executor with the fake as its kernel: a group's operations go to
    :meth:`Fake.apply` (a step's failure is that of its first operation that failed); host
    sysctls are written, as there, after the wave (:func:`write_sysctl`)."""

    def __init__(self, cli: FakeCli, fault: str) -> None:
        super().__init__(runner=cli.reads, fault=fault)
        self.cli = cli
        self.sysctls: dict[str, list] = {}

    def _start_group(self, group, force):  # noqa: ANN001, ANN202
        tool = group[0].tool
        if tool == CONNTRACK:  # the fake keeps no connections
            return Done(Result(0, "", ""))
        if tool == SYSCTL and group[0].netns is None:
            for s in group:
                self.sysctls[s.text] = list(getattr(s, "ops", ()))
            return None
        ops, at = [], []
        for i, s in enumerate(group):
            # an nft script runs as written (inproc.py too, after any refusal): a take-down
            # declares its table and elements before deleting them, so that none is missing
            ops_of = getattr(s, "ops", ())
            mine = from_text(s, self.cli.fake) if tool == NFT or not ops_of else list(ops_of)
            ops += mine
            at += [i] * len(mine)
        errors: dict[int, apply.Failure] = {}
        for i, outcome in zip(at, self.cli.fake.apply(ops, force=force), strict=True):
            if outcome not in (OK, "skipped", "undone") and i not in errors:
                errors[i] = apply.Failure(f"{outcome}: {group[i].text.strip()}", outcome)
        return apply.Ran(errors)

    def write_sysctl(self, text: str) -> dict[int, str]:
        ops = self.sysctls.pop(text)
        if not ops:  # a step of its own text (plan/host.py): the key and the value
            key, _, value = text.partition("=")
            if key in (FORWARD_KEY, FORWARD6_KEY):  # (an undo: IPv4's or IPv6's)
                setattr(self.cli.fake, "forwarding" if key == FORWARD_KEY else "forwarding6", value)
                return {}
            raise AssertionError(f"a sysctl step without operations: {text!r}")
        for op in ops:
            try:
                self.cli.fake.do(op.verb, op.obj)
            except Failed as exc:
                return {0: str(exc)}
        return {}

    def _fault_point(self) -> None:
        self.count += 1
        kind, _, at = self.fault.partition("@")
        if at.isdigit() and int(at) == self.count:
            if kind == "kill":
                self.cli.die()
            raise apply.InjectedFault("continue", f"injected fault after process {self.count}")


class FakeCli:
    """One fake host (an uplink ``up0``, 203.0.113.2/24, default route on it) and the CLI
    run against it: :meth:`fireroute` is ``fireroute ARGS`` with ``FIREROUTE_STATE``."""

    def __init__(self) -> None:
        self.fake = Fake()
        self.fake.seed(Link(UPLINK, "", "", None, "", group=None))
        self.fake.seed(Addr(self.fake.objs[("link", (None, UPLINK))], "203.0.113.2/24"))
        self.fake.seed_route("0.0.0.0/0", UPLINK)
        self.records: dict[str, str] = {}
        """record name (kernel/forwarding.py V4, V6) -> forwarding's value before fireroute
        switched it on"""
        self.reads = Reads(self.fake)
        self.executor: FakeExecutor | None = None
        self.fault = ""
        self.pipe: int | None = None
        """in a child run for ``kill@K``: where the host goes when it dies"""
        self.patches = contextlib.ExitStack()
        self.lock_fds: set[tuple[int, int]] = set()
        """the state files whose lock descriptors were open before (kept open)"""

    # -- the seams ---------------------------------------------------------------------------
    def __enter__(self) -> FakeCli:
        from fireroute import api, manager
        from fireroute.kernel import read
        from fireroute.repair import picture

        cli = self
        self.lock_fds = set(_LOCK_FDS)

        def host_init(host, state=None, *, in_process=False) -> None:  # noqa: ANN001, ARG001
            host.state = os.fspath(state)
            host._shared = None
            host._manager = manager.Manager(host.state, runner=cli.reads, executor=cli.new)

        def record(value: str, name: str = forwarding.V4) -> bool:
            if name in cli.records:
                return False
            cli.records[name] = value
            return True

        def forget(name: str = forwarding.V4) -> None:
            cli.records.pop(name, None)

        def write(text: str) -> dict[int, str]:
            assert cli.executor is not None
            return cli.executor.write_sysctl(text)

        for target, name, value in [
            (api.Host, "__init__", host_init),
            (scope, "read_sysctl", self.sysctl),
            (apply, "read_sysctl", self.sysctl),
            (scope, "which", lambda tool: f"/usr/sbin/{tool}"),
            (observe, "require_net_admin", lambda action: None),
            (forwarding, "recorded", lambda name=forwarding.V4: cli.records.get(name)),
            (forwarding, "record", record),
            (forwarding, "forget", forget),
            (apply, "_write_sysctl", write),
            (read, "read", lambda src, vms=(), *_: current(cli.fake)),
            (picture, "read", lambda src, vms=(), *_: current(cli.fake)),
        ]:
            self.patches.enter_context(mock.patch.object(target, name, value))
        return self

    def __exit__(self, *exc: object) -> None:
        """The runs' process ends: its patches go, and the descriptors a process keeps for
        its life (each state file's lock, state/store.py) are closed, as its exit would close
        them (else a property test's examples, each with state files of its own, pile them up
        past a user's limit)."""
        self.patches.close()
        gc.collect()  # (the runs' SQLite connections first: closing a lock's drops their locks)
        for key in _LOCK_FDS.keys() - self.lock_fds:
            os.close(_LOCK_FDS.pop(key)[0])

    def sysctl(self, key: str) -> str:
        """A sysctl read (kernel/apply.py ``read_sysctl``) from the fake: either forwarding,
        a per-device one set (a Sysctl object), a link's ``disable_ipv6`` never set as the
        kernel has it (0); any other, or one of a link that is not there, is no file."""
        f = self.fake
        if key in (FORWARD_KEY, FORWARD6_KEY):
            return f.forwarding if key == FORWARD_KEY else f.forwarding6
        obj = f.objs.get(("sysctl", (None, key)))
        if obj is not None:
            return obj.value  # type: ignore[attr-defined]
        dev = key.split("/")[3] if key.startswith("net/ipv6/conf/") else None
        if key.endswith("/disable_ipv6") and ("link", (None, dev)) in f.objs:
            return "0"
        raise FileNotFoundError(key)

    def new(self) -> FakeExecutor:
        self.executor = FakeExecutor(self, self.fault)
        return self.executor

    # -- running the CLI ---------------------------------------------------------------------
    def fireroute(self, state: str, *args: str, fault: str = "") -> Proc:
        """``fireroute ARGS`` on state file ``state``; ``fault`` is FIREROUTE_FAULT's value
        (``kill@K`` runs it in a child that dies there)."""
        if fault.startswith("kill@"):
            return self._forked(state, args, fault)
        return self._run(state, args, fault)

    def _run(self, state: str, args: tuple[str, ...], fault: str) -> Proc:
        from fireroute.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        self.fault = fault
        env = {"FIREROUTE_STATE": state, "FIREROUTE_DEBUG": "1"}
        try:
            with (
                mock.patch.dict(os.environ, env),
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
            ):
                rc = main(list(args))
        finally:
            self.fault, self.executor = "", None
        return Proc(rc, out.getvalue(), err.getvalue())

    def _forked(self, state: str, args: tuple[str, ...], fault: str) -> Proc:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never back into the test
            rc = 70
            try:
                os.close(r)
                self.pipe = w
                p = self._run(state, args, fault)
                rc = p.returncode
                self._send()
            finally:
                os._exit(rc)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        if data:
            f = self.fake
            f.objs, f.copies, f.held, f.forwarding, f.forwarding6, self.records = pickle.loads(data)
        return Proc(rc, "", "")

    def _send(self) -> None:
        f = self.fake
        data = pickle.dumps((f.objs, f.copies, f.held, f.forwarding, f.forwarding6, self.records))
        assert self.pipe is not None
        with os.fdopen(self.pipe, "wb") as out:
            out.write(data)

    def die(self) -> None:
        """``kill@K`` reached: the host as it is goes to the parent, and the process ends."""
        self._send()
        os._exit(KILLED)


def from_text(step, fake: Fake) -> list:  # noqa: ANN001
    """A step without operations (an nft script, an iptables rule of up): what it does."""
    if step.tool == "nft":
        return fake_text.nft_ops(step.text, fake, step.netns)
    if step.tool == "iptables":
        return [fake_text.iptables_op(step.table, step.text)]
    raise AssertionError(f"a {step.tool} step without operations: {step.text!r}")


def current(fake: Fake) -> Current:
    """The fake as kernel/read.py reads a host: every object, less what the reader leaves
    out (lo's address; another program's tables, named in ``foreign_tables``; iptables rules
    without a tag, listed in ``ipt`` only, with every copy)."""
    from fireroute.kernel.observe import NETNS_PREFIX

    cur = Current()
    foreign = {
        o.key
        for o in fake.objs.values()
        if o.kind == "nft table" and o.owner != TABLE_COMMENT and o.ns is None
    }
    for k, o in fake.objs.items():
        if o.kind == "iptables rule":
            cur.ipt += [o] * (1 + fake.copies.get(k, 0))
            if not o.owner:
                continue
        if o.kind == "addr" and o.dev == "lo":  # type: ignore[attr-defined]
            continue
        if o.kind.startswith("nft ") and (o.ns, o.family, getattr(o, "table", "")) in foreign:
            continue
        if o.kind == "nft table" and o.key in foreign:
            cur.foreign_tables.append((o.family, o.name))  # type: ignore[attr-defined]
            continue
        if o.kind == "nft set":
            cur.sets.setdefault((o.ns, o.family, o.table), []).append(o.name)  # type: ignore[attr-defined]
        cur.add(o)
    cur.forwarding = fake.forwarding
    cur.forwarding6 = fake.forwarding6
    cur.namespaces = [
        o.name for o in fake.objs.values() if o.kind == "netns" and o.name.startswith(NETNS_PREFIX)
    ]
    cur.inside = set(cur.namespaces)
    return cur
