"""One thread owns the state file and the kernel: connections hand it calls and wait.

Calls that arrive while another is being served are taken together where that changes
nothing but the time they take (:func:`steps`): ``down`` calls are one ``Host.down`` (one
batch of tap deletions: the kernel's ~20 ms per deleted link is paid once per batch, not per
VM; the worker answers once the kernel has removed the links and goes on while the kernel
finishes with them, see unlink.py), and ``up`` calls with equal options are one
``Host.up_many`` (all or nothing: if the batch fails, each is tried alone so that each caller
gets its own answer). Calls on one VM run in the order they arrived, so the results are what
the calls one after the other would have given.

With ``ready`` VMs (fireroute/ready.py), an ``up`` whose options are the ready VMs' (the
server's fixed ones: the client gave none) claims one; when no call waits, the worker makes
one more ready VM at a time, once no call has come for a moment (:data:`IDLE`), until there
are ``ready`` (so a call that arrives meanwhile waits for one VM's up at most). It takes them
down when it stops, and takes down at start those a run killed before it could left.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable

from fireroute.api import Host
from fireroute.errors import Busy, NotFound, PartialFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.serve.unlink import EarlyRtnl

BATCH = 64
IDLE = 0.05
"""seconds without a call after which the worker makes a missing ready VM"""


BARRIERS = ("list", "check", "stats", "gc")
"""calls on every VM: nothing is moved across one"""
CHANGES = ("up", "down", "gc")
"""calls that may make or remove VMs (and taps): the worker's ``on_change`` is told after"""


class Call:
    __slots__ = ("verb", "name", "options", "done", "result", "error", "cancelled", "batch")

    def __init__(self, verb: str, name: str | None = None, options: dict | None = None) -> None:
        self.verb = verb
        self.name = name
        self.options = options or {}
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.cancelled = False
        """its caller gave up waiting (and was told so): the worker skips it"""
        self.batch = 0
        """how many calls ran together with it, itself included (0: it has not run)"""

    def finish(self, result: object = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


STOP_WAIT = 600.0
"""seconds a stop waits for the worker (the longest a call may take, as a client waits)"""


class Worker:
    def __init__(self, state: str, ready: int = 0, shape: dict[str, object] | None = None) -> None:
        self.calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self.state = state
        self.keep = ready
        """how many ready VMs to keep (0: none), of the options ``shape``"""
        self.shape = dict(shape or {})
        self.have = 0  # ready VMs there, as last counted
        self.stalled = False  # the last fill failed: none again until a call changed something
        self.log: Callable[[dict], None] = lambda record: None
        self.on_change: Callable[[], None] | None = None
        """called (on the worker's thread) after a batch that made or removed VMs"""
        self.host: Host | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fireroute-worker", daemon=True)

    def start(self) -> tuple[str, list[str]]:
        """Start; returns what the start-up gc did (half-made VMs finished or undone) and the
        ready VMs a run before left (killed), taken down (made again when idle)."""
        self.thread.start()
        call, left = Call("gc"), Call("ready-drain")
        self.calls.put(call)
        self.calls.put(left)
        done, drained = self.wait(call, 300), self.wait(left, 300)
        assert isinstance(drained, list)
        return str(done), drained

    def run(self, call: Call) -> object:
        """Hand the worker a call and wait for its result (raised: its error)."""
        self.calls.put(call)
        return self.wait(call, 600)

    @staticmethod
    def wait(call: Call, timeout: float) -> object:
        if not call.done.wait(timeout):
            call.cancelled = True  # (a call already under way still finishes)
            raise Busy(f"the server did not get to {call.verb} within {timeout:g}s; try again")
        if call.error is not None:
            raise call.error
        return call.result

    def stop(self) -> None:
        """Return once the worker is done: the calls handed to it before, then every ready VM
        taken down (one batch ``down``, ~1 s per 1000 VMs), then the kernel's link deletions;
        or after :data:`STOP_WAIT` (a kernel call that never returns), said in the log: what
        is left, the next start takes down. A supervisor's stop timeout may come first."""
        self.calls.put(None)
        self.thread.join(STOP_WAIT)
        if self.thread.is_alive():
            self.log({"event": "stop-timeout", "seconds": STOP_WAIT})

    # -- the worker thread --------------------------------------------------------------------
    def _run(self) -> None:
        self.host = Host(self.state, in_process=True, quiet=True)  # (answers carry no warnings)
        unlinker = early_deletions(self.host)
        try:
            self._loop()
        finally:
            try:
                self.host.ready_drain()
            finally:
                unlinker.drain()  # a stop waits for the deletions still in the kernel

    def _next(self) -> Call | None:
        """The next call; while ready VMs are missing and none has come for :data:`IDLE`
        seconds, one more is made (a burst of claims is not slowed by the refill)."""
        while self.keep and self.have < self.keep and not self.stalled:
            try:
                return self.calls.get(timeout=IDLE)
            except queue.Empty:
                self._fill()
        return self.calls.get()

    def _fill(self) -> None:
        assert self.host is not None
        try:
            have = self.host.ready_fill(self.keep, self.shape)
        except Exception as exc:  # noqa: BLE001 - logged; tried again after the next change
            self.stalled = True
            self.log({"event": "ready-failed", "error": f"{type(exc).__name__}: {exc}"[:200]})
            return
        made, self.have = have > self.have, have
        if made and self.on_change is not None:
            self.on_change()

    def _loop(self) -> None:
        while True:
            first = self._next()
            if first is None:
                return
            batch = [first]
            while len(batch) < BATCH:
                try:
                    nxt = self.calls.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.calls.put(None)
                    break
                batch.append(nxt)
            batch = [c for c in batch if not c.cancelled]
            try:
                self._serve(batch)
            except BaseException as exc:  # noqa: BLE001 - a bug must not end the worker
                for c in batch:
                    if not c.done.is_set():
                        c.finish(error=exc)
            if any(c.verb in CHANGES for c in batch):
                self.stalled = False
                if self.on_change is not None:
                    self.on_change()

    def _serve(self, batch: list[Call]) -> None:
        for step in steps(batch):
            for c in step:
                c.batch = len(step)
            if step[0].verb == "down":
                self._down(step)
            elif step[0].verb == "up":
                self._up(step)
            else:
                self._one(step[0])

    def _one(self, c: Call) -> None:
        assert self.host is not None
        try:
            if c.verb == "get":
                c.finish(self.host.get(str(c.name)))
            elif c.verb == "list":
                c.finish(self.host.list())
            elif c.verb == "gc":
                c.finish(self.host.gc())
            elif c.verb == "check":
                c.finish(self.host.check())
            elif c.verb == "stats":
                c.finish(self.host.stats())
            elif c.verb == "ready-drain":  # (the worker's own, at start)
                c.finish(self.host.ready_drain())
                self.have = 0
            elif c.verb == "record":  # the VM as recorded, for work done off this thread
                c.finish(self.host.get(str(c.name)))
            elif c.verb == "policy":
                c.finish(self.host.policy(str(c.name), **c.options))
            elif c.verb == "cni":  # a CNI plugin's call (handoff.py), alone: a barrier
                from fireroute.handoff import serve_cni

                c.finish(serve_cni(self.host, c.options.get("env"), c.options.get("stdin")))
            else:
                c.finish(error=NotFound(f"no such verb {c.verb}"))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            c.finish(error=exc)

    def _down(self, calls: list[Call]) -> None:
        assert self.host is not None
        names = list(dict.fromkeys(str(c.name) for c in calls))
        try:
            removed = set(self.host.down(*names))
        except PartialFailure as exc:  # each caller gets its own VM's failures only
            for c in calls:
                own = [f for f in exc.failures if getattr(f, "vm", None) == c.name]
                if own:
                    c.finish(error=PartialFailure(own))
                else:
                    c.finish(True)
            return
        except BaseException as exc:  # noqa: BLE001
            for c in calls:
                c.finish(error=exc)
            return
        for c in calls:  # a name again: gone already, as the first call on it left it
            c.finish(str(c.name) in removed)
            removed.discard(str(c.name))

    def _up(self, calls: list[Call]) -> None:
        assert self.host is not None
        calls = [c for c in calls if not self._claimed(c)]
        if not calls:
            return
        names = [str(c.name) for c in calls]
        if len(calls) > 1 and len(set(names)) == len(names):
            try:
                vms = self.host.up_many(names, **calls[0].options)
            except BaseException:  # noqa: BLE001 - all or nothing: each alone gets its answer
                pass
            else:
                by_name = {v.name: v for v in vms}
                for c in calls:
                    c.finish(by_name[str(c.name)])
                return
        for c in calls:
            try:
                c.finish(self.host.up(str(c.name), **c.options))
            except BaseException as exc:  # noqa: BLE001
                c.finish(error=exc)

    def _claimed(self, c: Call) -> bool:
        """Was ``c`` answered with a ready VM claimed? (False: it takes the cold path: it
        asks for other options, no ready VM is there, its VM is up already, or the claim
        failed, undone.)"""
        assert self.host is not None
        if not self.keep or c.options != self.shape:
            return False
        try:
            vm = self.host.ready_claim(str(c.name), c.options)
        except Exception as exc:  # noqa: BLE001 - undone: the cold path answers
            self.log({"event": "claim-failed", "error": f"{type(exc).__name__}: {exc}"[:200]})
            self._renew()
            return False
        if vm is None:  # (none there, maybe taken down behind the daemon's back: counted again)
            self.have = 0
            return False
        self.have -= 1
        c.finish(vm)
        return True

    def _renew(self) -> None:
        """After a failed claim (a ready VM that drifted, say: each claim would fail on it
        again), the ready VMs are taken down, to be made again when idle."""
        assert self.host is not None
        try:
            self.host.ready_drain()
        except Exception as exc:  # noqa: BLE001 - the next start drains what is left
            self.log({"event": "ready-failed", "error": f"{type(exc).__name__}: {exc}"[:200]})
        self.have, self.stalled = 0, False


def steps(batch: list[Call]) -> list[list[Call]]:
    """The calls of a batch as the worker runs them: a list of steps, each the calls run
    together (``down``s; ``up``s with equal options) or one call alone, in order.

    A call joins the latest step of its kind only if no step after it touches the call's VM
    and no barrier (a call on every VM) stands after it; else it starts a step of its own at
    the end. So every call runs after everything that arrived before it on its VM (and before
    it at all, for a barrier), which makes the batch's results those of the calls one after
    the other: calls on different VMs commute, and two ``down``s or two equal ``up``s of one
    VM in a row are what the second would have met alone (the second ``down`` is answered
    ``false``, the second ``up`` is the no-op it would have been)."""
    out: list[list[Call]] = []
    last: dict[str | None, int] = {}  # a VM -> the index of the last step that touches it
    latest: dict[str, int] = {}  # a kind of call run together -> its latest step's index
    floor = -1  # the index of the latest barrier
    for c in batch:
        kind = _kind(c)
        at = latest.get(kind, -1) if kind is not None else -1
        if kind is not None and at > floor and at >= last.get(c.name, -1):
            out[at].append(c)
        else:
            out.append([c])
            at = len(out) - 1
            if kind is not None:
                latest[kind] = at
        if c.verb in BARRIERS or c.name is None:
            floor = at
        else:
            last[c.name] = at
    return out


def _kind(c: Call) -> str | None:
    """What calls run together share (None: it runs alone)."""
    if c.verb == "down":
        return "down"
    if c.verb == "up":
        return "up " + json.dumps(c.options, sort_keys=True)
    return None


def early_deletions(host: Host) -> EarlyRtnl:
    """Make the Host's in-process executor delete link groups as unlink.py does."""
    from fireroute.serve.unlink import EarlyRtnl

    executor = host.in_process_executor
    assert executor is not None
    executor.rtnl.close()
    executor.rtnl = early = EarlyRtnl()
    return early


def now_ms(start: float) -> float:
    return (time.monotonic() - start) * 1000
