"""The verbs: up, down, teardown, show, ls. Request -> plan -> apply -> record.

Every mutating verb holds the state lock for its whole run, so fireroute processes never
interleave kernel changes; the state row goes ``pending`` before any kernel object exists.
"""

from __future__ import annotations

import contextlib
import os

from fireroute import allocate, request
from fireroute.errors import (
    AlreadyExists,
    ConflictError,
    FirerouteError,
    KernelError,
    NotFound,
    UsageError,
)
from fireroute.kernel import observe, scope
from fireroute.kernel.apply import Executor
from fireroute.kernel.run import Runner, run
from fireroute.kernel.scope import FORWARD6_BEFORE, FORWARD_BEFORE, FORWARD_RECORD, done
from fireroute.model import Options, Vm, check_vm_name
from fireroute.plan.steps import SYSCTL, Plan
from fireroute.state.store import Store
from fireroute.want.shared import BRIDGE, NAT, NAT6, Population

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fireroute.kernel.read import Source
    from fireroute.want.objects import Obj

    Progress = Callable[[str], None]
    Index = dict[tuple, Obj]


class UpResult:
    __slots__ = ("vms", "plan", "changed", "warnings")

    def __init__(
        self, vms: list[Vm], plan: Plan, changed: bool, warnings: list[str] | None = None
    ) -> None:
        self.vms = vms
        self.plan = plan
        self.changed = changed
        self.warnings = warnings or []


class _UpDraft:
    """up's plan as it is made, with what applying it (and its AlreadyExists retry) needs:
    the new VMs, the request's options, what is wanted and what is there as up reads it, the
    state file's meta to record, forwarding as read, the FORWARD policy read started."""

    __slots__ = ("vms", "options", "plan", "desired", "current", "meta", "warnings", "forwarding",
                 "forwarding6", "recorded6", "policy", "held", "accept_ra",
                 "ipt_made_was")  # fmt: skip

    def __init__(self, vms: list[Vm], options: Options) -> None:
        self.vms, self.options, self.plan = vms, options, Plan()
        self.desired: Index = {}
        self.current: Index = {}
        self.meta: dict[str, str] = {}
        self.warnings: list[str] = []
        self.forwarding = ""
        self.forwarding6 = ""  # (read only for a VM with IPv6)
        self.recorded6 = False  # (this up wrote the namespace's IPv6 forwarding record)
        self.policy: object = None
        self.held: set[tuple] = set()  # shared elements another VM's up added (declared again)
        self.accept_ra: str | None = None  # the uplink given accept_ra=2 first (kernel/uplink6)
        self.ipt_made_was: str | None = None  # the iptables-nft record before this up's

    def new_table(self, family: str = NAT) -> bool:
        """Is the NAT table (``family``'s: the ip6 one for NAT6) made by this up (none of the
        other VMs is in it)?"""
        key = ("nft table", (None, family, self.options.table))
        return key in self.desired and key not in self.current


class Manager:
    """The verbs over one state file. ``executor`` makes the executor each verb runs its plan
    with (default: :class:`Executor`, processes; a long-lived caller passes one that works
    in-process); ``keep_store`` keeps the state file open between verbs (a caller that uses
    the manager from one thread only)."""

    def __init__(
        self,
        state: str | os.PathLike[str],
        runner: Runner = run,
        executor: Callable[[], Executor] | None = None,
        keep_store: bool = False,
    ) -> None:
        self.state_path = state
        self.runner = runner
        self.executor: Callable[[], Executor] = executor or (lambda: Executor(runner))
        self.keep_store = keep_store
        self._kept: Store | None = None
        self.read_policy = True
        """read iptables-nft's FORWARD policy behind ``up``'s warning (False: a door that
        shows no warning, the daemon's, skips the read)"""

    def _store(self, create: bool = True) -> Store:
        if not self.keep_store:
            return Store(self.state_path, create=create)
        if self._kept is None or (self._kept.db is None and create):
            store = Store(self.state_path, create=create)
            if store.db is None:
                return store  # nothing to keep yet
            self._kept = store
        return self._kept

    def state(self) -> Store:
        """The state file as it is (none is made): what check, restore and gc read."""
        return self._store(create=False)

    def run(self, plan: Plan, all_or_nothing: bool = True, count_faults: bool = True) -> None:
        """Apply ``plan`` with this manager's executor: all or nothing, else best effort
        (``count_faults``: the fault hook counts its processes)."""
        executor = self.executor()
        if all_or_nothing:
            executor.apply_all(plan)
        else:
            executor.apply_best_effort(plan, count_faults=count_faults)

    def take_down(self, store: Store, vms: list[Vm], dry_run: bool = False) -> Plan:
        """``vms`` of ``store`` down, as ``down`` takes them (the caller holds the lock): their
        plan, run best effort, their rows removed (a dry run: the plan only)."""
        return self._down_locked(store, vms, dry_run=dry_run) if vms else Plan()

    # -- up --------------------------------------------------------------------------------
    def up(
        self,
        names: list[str],
        options: Options,
        *,
        skip_conflicts: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
        ready: bool = False,
    ) -> UpResult:
        """``ready``: ``names`` may be ready VMs' (ready.py: only the daemon's pool makes
        them)."""
        from fireroute import validate

        validate.up(names, options, ready)
        scope.require_tools(
            options.backend, options.mode, any(p.proto == "udp" for p in options.publish)
        )
        if options.mode == "cni" and not os.path.exists(str(options.netns)):
            raise UsageError(f'network namespace "{options.netns}" does not exist')
        if not dry_run:
            observe.require_net_admin(f'create the network of vm "{names[0]}"')
        store = self._store(create=not dry_run)
        if dry_run:
            return self._up_locked(store, names, options, skip_conflicts, True, progress)
        with store.locked():
            return self._up_locked(store, names, options, skip_conflicts, False, progress)

    def _up_locked(
        self,
        store: Store,
        names: list[str],
        options: Options,
        skip_conflicts: bool,
        dry_run: bool,
        progress: Progress | None,
    ) -> UpResult:
        existing, fresh = self._up_sort(store, names, options, dry_run)
        if not fresh:
            return UpResult(existing, Plan(), False)
        vms, view, shape = allocate.new_vms(
            store, self.runner, fresh, options, skip_conflicts, progress
        )
        missing_bridges = allocate.check_new(store, self.runner, vms, view, fresh, options)
        draft = _UpDraft(vms, options)
        if options.ipv6:
            from fireroute.kernel import uplink6
            from fireroute.state.store import GATEWAY6

            if vms[0].own_gateway6 and store.meta(GATEWAY6) is None:
                draft.meta[GATEWAY6] = "own"  # (recorded with the leases: state/store.py)
            draft.accept_ra = view.uplink if uplink6.needed(self.runner, view.uplink) else None
        self._up_plan(draft, store, shape, missing_bridges, dry_run)
        if dry_run:
            self._policy_warning(draft.policy, draft.warnings)
            return UpResult(existing + vms, draft.plan, True, draft.warnings)
        self._up_apply(store, draft, progress)
        store.set_state([v.name for v in vms], "active")
        active = [v.with_state("active") for v in vms]
        return UpResult(existing + active, draft.plan, True, draft.warnings)

    def _up_sort(
        self, store: Store, names: list[str], options: Options, dry_run: bool
    ) -> tuple[list[Vm], list[str]]:
        """The VMs already up with these options, and the names to make (a VM left half-made
        by an interrupted run is taken down first)."""
        existing: list[Vm] = []
        fresh: list[str] = []
        for n in names:
            vm = store.get(n)
            if vm is None:
                fresh.append(n)
            elif vm.state == "active":
                differ = request.differences(vm, options)
                if differ:
                    raise ConflictError(
                        f'vm "{n}" is already up with other options ({"; ".join(differ)}); '
                        f'run "fireroute down {n}" first'
                    )
                existing.append(vm)
            else:
                if dry_run:
                    raise ConflictError(
                        f'vm "{n}" was left half-made by an interrupted run; '
                        "the next up or down cleans it"
                    )
                self._down_locked(store, [store.get(n)], dry_run=False)  # type: ignore[list-item]
                fresh.append(n)
        return existing, fresh

    def _up_plan(
        self, draft: _UpDraft, store: Store, shape: Population, missing_bridges: set[str],
        dry_run: bool,
    ) -> None:  # fmt: skip
        """``draft``'s plan, as one diff: read(scope) (kernel/scope.py ``up``: the other VMs'
        ``shape`` as present, with what up reads) against what the shape with the new VMs
        wants."""
        options = draft.options
        read = scope.up(store, self.runner, draft.vms, shape, missing_bridges)
        draft.desired, draft.current, draft.held = read.desired, read.current, read.held
        draft.forwarding, draft.forwarding6 = read.forwarding, read.forwarding6
        draft.meta.update(read.meta)
        if scope.IPT_MADE in read.meta:  # (a failed up gives the record back: _up_undo)
            draft.ipt_made_was = store.meta(scope.IPT_MADE)
        # A table with no VM of ours in it is created exclusively, unread: if a table of
        # that name exists the transaction fails and is undone, and the table is read then
        # (_up_retry): ours (left over), the plan runs again adding to it; a foreign one is
        # refused, and so (on nft's error) is a name nft reads as a keyword. A dry run
        # reads it first, to print what would run.
        new = draft.new_table()
        exclusive = new and not (dry_run and observe.check_table_owner(options.table, self.runner))
        new6 = draft.new_table(NAT6)
        exclusive6 = new6 and not (
            dry_run and observe.check_table_owner(options.table, self.runner, NAT6)
        )
        if new and not options.fix_forward_policy and self.read_policy:  # once per table
            from fireroute import doctor

            draft.policy = doctor.forward_policy_start(self.runner)  # read beside the changes
        draft.plan = self._up_diff(draft, exclusive, exclusive6)

    def _up_diff(self, draft: _UpDraft, nat_exclusive: bool, nat6_exclusive: bool = False) -> Plan:
        """``draft``'s diff compiled: a new NAT table made exclusively (``nat_exclusive``; the
        ip6 one: ``nat6_exclusive``), a bridge-family table the other VMs do not have read
        (ours: added to; none: made exclusively)."""
        from fireroute.plan.compiler import compile
        from fireroute.plan.diff import DELETE, SET, Scope, diff

        table, current = draft.options.table, dict(draft.current)
        exclusive = {(NAT, table)} if nat_exclusive else set()
        if nat6_exclusive:
            exclusive.add((NAT6, table))
        if scope.bridge_table(current, draft.desired, table, self.runner):
            exclusive.add((BRIDGE, table))
        names, instance = Scope(v.name for v in draft.vms), draft.vms[0].owner
        ops = [op for op in diff(current, draft.desired, names, instance) if op.verb != DELETE]
        for op in ops:
            if op.id in draft.held:  # another VM's already: declared (an undo leaves it)
                op.verb = SET
        before6 = draft.forwarding6 or None
        steps = compile(ops, exclusive, before=draft.forwarding, before6=before6)
        if draft.accept_ra is not None:  # (written right before IPv6 forwarding goes on)
            from fireroute.kernel import uplink6

            steps = uplink6.first(steps, draft.accept_ra)
        return Plan(steps)

    def _up_apply(self, store: Store, draft: _UpDraft, progress: Progress | None) -> None:
        """The rows reserved (``pending``), then the plan applied all or nothing (once again
        after AlreadyExists); on failure the rows and the forwarding record go again."""
        from fireroute.kernel import forwarding as record

        recorded = False
        if draft.forwarding != "1":  # for whichever state file's VM goes last (forwarding.py)
            recorded = record.record(draft.forwarding)
        if draft.forwarding6 not in ("", "1"):  # (IPv6's: its own record, undone as IPv4's)
            draft.recorded6 = record.record(draft.forwarding6, record.V6)
        if draft.accept_ra is not None:  # (given back with IPv6 forwarding: kernel/uplink6)
            from fireroute.kernel import uplink6

            uplink6.record(draft.accept_ra)
        proxied = {v.uplink for v in draft.vms if v.options.proxy_ndp}
        wrote: list[str] = []
        if proxied:  # (given back with the uplink's last proxy entry: kernel/uplink6)
            from fireroute.kernel import uplink6

            wrote = [uplink for uplink in sorted(proxied) if uplink6.record_proxy(uplink)]
        try:
            store.reserve(draft.vms, draft.meta)
        except BaseException:
            for uplink in wrote:  # (nothing was written: a record would outlive its reason)
                uplink6.forget_proxy(uplink)
            self._policy_warning(draft.policy, [])  # the read is waited for on every path
            raise
        if progress:
            progress(f"creating {len(draft.vms)} device(s) and NAT entries")
        try:
            try:
                self.executor().apply_all(draft.plan)
            except AlreadyExists:  # the table's name is taken: ours (left over) or not
                self._up_retry(draft)
        except BaseException as exc:
            self._up_undo(store, draft, recorded, exc, self.runner)
            raise
        finally:
            self._policy_warning(draft.policy, draft.warnings)

    def _up_retry(self, draft: _UpDraft) -> None:
        """After AlreadyExists: the tables read (a foreign one refused), the diff made again
        with a table of ours that is there declared whole, and applied. A new table that is
        not there (the other family's was) is still made exclusively: declared, a failed up
        left it behind, whole, though it made it (its undo takes back no table it declares)."""
        table, new, new6 = draft.options.table, draft.new_table(), draft.new_table(NAT6)
        there = observe.check_table_owner(table, self.runner)
        there6 = new6 and observe.check_table_owner(table, self.runner, NAT6)
        draft.plan = self._up_diff(draft, new and not there, new6 and not there6)
        self.executor().apply_all(draft.plan)

    @staticmethod
    def _up_undo(
        store: Store, draft: _UpDraft, recorded: bool, exc: BaseException, runner: Runner
    ) -> None:
        """A failed apply: the rows and the forwarding record go; a new table's name nft
        cannot parse is said as bad input (else the caller raises ``exc`` again)."""
        from fireroute.kernel import forwarding as record

        was = draft.ipt_made_was  # (the record before this up's: it stays)
        kept = {scope.IPT_MADE: was} if was is not None else None
        store.remove([v.name for v in draft.vms], drop_meta=list(draft.meta), meta=kept)
        made = draft.meta.get(scope.IPT_MADE)
        if made is not None:  # what its rules brought in goes
            with contextlib.suppress(FirerouteError):  # (the up's own error is the one said)
                scope.made_undo(runner, was, made)
        if recorded and scope.forwarding() == draft.forwarding:
            # undone: forwarding has its old value again, and this record is nobody's
            # (found by review: it outlived a failed up and later undid the admin's "on")
            record.forget()
        if draft.recorded6 and scope.forwarding6() == draft.forwarding6:
            record.forget(record.V6)
        if draft.accept_ra is not None:  # (the plan's undo wrote its 1 back)
            from fireroute.kernel import uplink6

            uplink6.give_back()
        if draft.options.proxy_ndp:  # (the plan's undo took its proxy entries)
            from fireroute.kernel import uplink6

            uplink6.give_back_proxy(runner, {v.uplink for v in draft.vms})
        table = draft.options.table
        if (
            isinstance(exc, KernelError)
            and draft.new_table()
            and observe.is_keyword_table(table, exc.detail)
        ):  # a new table's name nft cannot parse: bad input, and everything is undone
            raise observe.keyword_table(table) from None

    @staticmethod
    def _policy_warning(policy: object, warnings: list[str]) -> None:
        """The iptables-nft FORWARD policy read started beside the changes, as a warning."""
        if policy is None:
            return
        from fireroute import doctor

        finding = doctor.forward_policy_finding(policy)  # type: ignore[arg-type]
        if finding.level == doctor.FAIL:
            warnings.append(f"{finding.what}; {finding.advice}")

    # -- down ------------------------------------------------------------------------------
    def down(
        self, names: list[str], *, everything: bool = False, dry_run: bool = False
    ) -> tuple[list[Vm], Plan]:
        for n in names:
            check_vm_name(n)
        store = self._store(create=False)
        if not dry_run:
            observe.require_net_admin(
                f'remove the network of vm "{names[0]}"' if names else "remove vm networks"
            )
        if dry_run:
            vms = self._pick(store, names, everything)
            return vms, self._down_plan(store, vms)
        with store.locked():
            vms = self._pick(store, names, everything)
            return vms, self._down_locked(store, vms, dry_run=False)

    def _pick(self, store: Store, names: list[str], everything: bool) -> list[Vm]:
        if everything:
            return store.all()
        # a name given twice is one vm: counting it twice would take the table down under others
        return [vm for vm in (store.get(n) for n in dict.fromkeys(names)) if vm is not None]

    def _down_plan(self, store: Store, vms: list[Vm]) -> Plan:
        """Steps removing ``vms``, as one diff: read(scope) (kernel/scope.py ``down``: the
        leases rendered, the kernel read at the thresholds only) against what the VMs that
        stay want."""
        if not vms:
            return Plan()
        from fireroute.plan.diff import Scope

        read = scope.down(store, self.runner, vms)
        return _plan(read, Scope(v.name for v in vms), store.instance())

    def _down_locked(self, store: Store, vms: list[Vm], dry_run: bool) -> Plan:
        plan = self._down_plan(store, vms)
        if dry_run or not vms:
            return plan
        self._apply_down(store, vms, plan)
        return plan

    def _apply_down(self, store: Store, vms: list[Vm], plan: Plan) -> None:
        """``plan`` taking ``vms`` down run best effort (their rows ``removing`` meanwhile),
        then their rows gone, and the forwarding record with the last of them."""
        names = [v.name for v in vms]
        store.set_state(names, "removing")
        self.executor().apply_best_effort(plan)
        last = bool(vms) and store.count() == len(vms)
        done(plan)
        store.remove(
            names, drop_meta=([FORWARD_BEFORE, FORWARD6_BEFORE] if last else []) + plan.forget
        )

    # -- teardown --------------------------------------------------------------------------
    def teardown(self, dry_run: bool = False) -> tuple[list[Vm], Plan]:
        """Every VM down, then whatever else carries fireroute's tags, forwarding restored."""
        store = self._store(create=False)
        if dry_run:
            vms = store.all()
            return vms, self._teardown_plan(store, vms)
        observe.require_net_admin("tear down fireroute's networking")
        with store.locked():
            vms = store.all()
            plan = self._teardown_plan(store, vms)
            self._apply_down(store, vms, plan)
            return vms, plan

    def _teardown_plan(self, store: Store, vms: list[Vm], src: Source | None = None) -> Plan:
        """One diff: read(scope) (kernel/scope.py ``teardown``: the whole host, from ``src``,
        default this manager's runner) against nothing wanted."""
        from fireroute.kernel.read import Source
        from fireroute.plan.diff import ALL

        read = scope.teardown(store, self.runner, src or Source(self.runner), vms)
        return _plan(read, ALL, store.instance())

    # -- egress policy ---------------------------------------------------------------------
    def policy(self, name: str, changes: dict[str, object], dry_run: bool = False) -> Vm:
        """Change a running VM's egress policy (``egress``, ``allow_out``, ``deny_out`` as
        request fields) in one nft transaction (change.py)."""
        from fireroute import change

        return change.policy(self, name, changes, dry_run)

    def publish(
        self, name: str, add: list[str], remove: list[str], dry_run: bool = False
    ) -> tuple[Vm, Plan]:
        """Publish (``add``) or unpublish (``remove``) host ports of a running VM, as
        ``--publish`` specs, in one nft transaction (change.py)."""
        from fireroute import change

        return change.publish(self, name, add, remove, dry_run)

    def ls(self) -> list[Vm]:
        return self._store(create=False).all()

    def show(self, name: str) -> Vm:
        check_vm_name(name)
        vm = self._store(create=False).get(name)
        if vm is None:
            raise NotFound(f'vm "{name}" is not known to the state file {self.state_path}')
        return vm


__all__ = ["Manager", "UpResult", "FirerouteError", "FORWARD_BEFORE", "FORWARD_RECORD", "done"]
"""(the state file's forwarding records and ``done``: kernel/scope.py's, as repair/ reads them)"""


def _plan(read: scope.Read, names: object, instance: str) -> Plan:
    """A take-down's plan: the deletes of the diff of ``read`` (what is there against what
    stays wanted), compiled, with the steps the diff cannot say before forwarding's."""
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import DELETE, diff

    ops = diff(read.current, read.desired, names, instance)  # type: ignore[arg-type]
    steps = compile([op for op in ops if op.verb == DELETE], found=read.current)
    at = next((i for i, s in enumerate(steps) if s.tool == SYSCTL), len(steps))
    plan = Plan()
    plan.add(*steps[:at], *read.cleanup, *steps[at:])  # the made chains before forwarding
    plan.forget += read.forget
    return plan
