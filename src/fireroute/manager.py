"""The verbs: up, down, teardown, show, ls. Request -> plan -> apply -> record.

Every mutating verb holds the state lock for its whole run, so fireroute processes never
interleave kernel changes; the state row goes ``pending`` before any kernel object exists.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address

from fireroute import addressing, allocate, jsontext, request
from fireroute.errors import (
    AlreadyExists,
    ConflictError,
    FirerouteError,
    KernelError,
    MissingTool,
    NotFound,
    UsageError,
)
from fireroute.kernel import observe
from fireroute.kernel.apply import Executor, read_sysctl
from fireroute.kernel.run import Runner, run, which
from fireroute.model import Options, Vm, check_vm_name
from fireroute.plan import host, modes
from fireroute.plan.steps import NFT, SYSCTL, Plan, Step
from fireroute.state.store import Store
from fireroute.want.objects import FORWARD_KEY, Forwarding
from fireroute.want.shared import BRIDGE, NAT, Population, shared

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fireroute.kernel.read import Source
    from fireroute.want.iptables import IptRule
    from fireroute.want.objects import Obj

    Progress = Callable[[str], None]
    Index = dict[tuple, Obj]

FORWARD_BEFORE = "ip_forward_before"
FORWARDING = ("forwarding", (None, FORWARD_KEY))
FORWARD_RECORD = "host:ip_forward"
"""in ``Plan.forget``: the namespace's forwarding record (kernel/forwarding.py) is obsolete
once the plan ran, if forwarding then has the recorded value"""


def done(plan: Plan) -> None:
    """After a plan ran: drop the host-wide records it made obsolete."""
    if FORWARD_RECORD not in plan.forget:
        return
    from fireroute.kernel import forwarding as record

    before = record.recorded()
    if before is not None and read_sysctl(host.FORWARD_KEY) == before:
        record.forget()


# plan.iptables is imported where its backend is met: a NAT VM on nftables never loads it


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
                 "policy", "held")  # fmt: skip

    def __init__(self, vms: list[Vm], options: Options) -> None:
        self.vms, self.options, self.plan = vms, options, Plan()
        self.desired: Index = {}
        self.current: Index = {}
        self.meta: dict[str, str] = {}
        self.warnings: list[str] = []
        self.forwarding = ""
        self.policy: object = None
        self.held: set[tuple] = set()  # shared elements another VM's up added (declared again)

    def new_table(self) -> bool:
        """Is the NAT table made by this up (none of the other VMs is in it)?"""
        key = ("nft table", (None, NAT, self.options.table))
        return key in self.desired and key not in self.current


def _require_tools(backend: str, mode: str = "nat", udp_ports: bool = False) -> None:
    tools = (
        ["ip", "nft"] if backend == "nft" else ["ip", "iptables-nft-restore", "iptables-nft-save"]
    )
    if mode == "cni":
        tools += ["tc", "nsenter"]
    if udp_ports:
        tools.append("conntrack")
    for tool in tools:
        if which(tool) is None:
            packages = {
                "ip": "iproute2",
                "tc": "iproute2",
                "nft": "nftables",
                "nsenter": "util-linux",
                "conntrack": "conntrack",
            }
            pkg = packages.get(tool, "iptables")
            raise MissingTool(f"{tool} not found: install the {pkg} package")


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
    ) -> UpResult:
        for n in names:
            check_vm_name(n)
        if len(set(names)) != len(names):
            raise UsageError("a vm name was given twice")
        if options.tap is not None and len(names) > 1:
            raise UsageError("--tap names one tap: it cannot be used with several vms")
        if options.mode == "cni" and len(names) > 1:
            raise UsageError("a CNI attachment is one vm: its namespace and ifname name one")
        if options.mac is not None and len(names) > 1:
            raise UsageError("--mac names one MAC: it cannot be used with several vms")
        from fireroute import validate

        validate.request(options)
        _require_tools(
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
        vms, view, shape = self._up_allocate(store, fresh, options, skip_conflicts, progress)
        missing_bridges = self._up_checks(store, vms, view, fresh, options)
        draft = _UpDraft(vms, options)
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

    def _up_allocate(
        self,
        store: Store,
        fresh: list[str],
        options: Options,
        skip_conflicts: bool,
        progress: Progress | None,
    ) -> tuple[list[Vm], observe.HostView, Population]:
        """The new VMs with their devices, networks, owner and MAC; the host as read; the
        shape of the other VMs of the state file."""
        devs = allocate.devices(store, fresh, options)
        allocate.check_unique(store, self.runner, fresh, options)
        if progress:
            progress(f"allocating {len(fresh)} address(es)")
        nets, view = allocate.networks(store, self.runner, fresh, options, skip_conflicts)
        if options.egress == "public":  # the uplink's networks, recorded with the VM
            from fireroute.model import merged

            options.host_nets = merged(observe.link_networks(view.uplink, self.runner))
        vms = [
            Vm(n, net, devs[n], "", view.uplink, options, "pending")
            for n, net in zip(fresh, nets, strict=True)
        ]
        instance = store.instance()
        shape = Population(store.shapes())
        for vm in vms:
            vm.owner = instance
            vm.mac = options.mac or addressing.mac_for_vm(vm.name, vm.guest_ip)
            if vm.mode == "clone":
                vm.netns_name = f"{observe.NETNS_PREFIX}{instance}-{vm.name}"
        return vms, view, shape

    def _up_checks(
        self,
        store: Store,
        vms: list[Vm],
        view: observe.HostView,
        fresh: list[str],
        options: Options,
    ) -> set[str]:
        """A clone address not taken, each named bridge that exists a bridge: the bridges to
        make, returned."""
        bridges = {str(v.options.bridge) for v in vms if v.mode == "bridge"}
        missing_bridges = {b for b in bridges if view.links.get(b) is None}
        if options.mode == "clone" and options.clone_address not in (None, "auto"):
            from fireroute import named

            ca = IPv4Address(options.clone_address)
            allocate.check_named(store, self.runner, options, view.uplink, [
                named.Named("clone address", ca, named.ROUTED, fresh[0])
            ])  # fmt: skip
        for b in bridges - missing_bridges:
            link = view.links[b] or {}
            if link.get("linkinfo", {}).get("info_kind") not in (None, "bridge"):
                raise ConflictError(f'"{b}" exists on this host and is not a bridge')
        return missing_bridges

    def _up_plan(
        self, draft: _UpDraft, store: Store, shape: Population, missing_bridges: set[str],
        dry_run: bool,
    ) -> None:  # fmt: skip
        """``draft``'s plan, as one diff: the shared objects of the other VMs' ``shape`` as
        present (the new VMs' own objects absent: a reservation cannot hold an existing
        device), with what up reads (forwarding, the shared iptables rule, the bridges),
        against what the shape with the new VMs wants."""
        from fireroute.want import render

        vms, options, instance = draft.vms, draft.options, store.instance()
        draft.desired = render.desired(vms, _joined(shape, vms), instance)
        draft.current = current = render.desired([], shape, instance)
        draft.forwarding = read_sysctl(host.FORWARD_KEY)
        if FORWARDING not in current and store.meta(FORWARD_BEFORE) is None:
            draft.meta[FORWARD_BEFORE] = draft.forwarding  # the first VM of all
        current[FORWARDING] = Forwarding(draft.forwarding)
        # A table with no VM of ours in it is created exclusively, unread: if a table of
        # that name exists the transaction fails and is undone, and the table is read then
        # (_up_retry): ours (left over), the plan runs again adding to it; a foreign one is
        # refused, and so (on nft's error) is a name nft reads as a keyword. A dry run
        # reads it first, to print what would run.
        new = draft.new_table()
        exclusive = new and not (dry_run and observe.check_table_owner(options.table, self.runner))
        if new and not options.fix_forward_policy:  # once per table, not per VM
            from fireroute import doctor

            draft.policy = doctor.forward_policy_start(self.runner)  # read beside the changes
        if options.backend == "iptables" and any(modes.nat_member(v) for v in vms):
            self._up_iptables(draft)
        draft.held = _egress_again(current, vms)
        for br in {str(v.options.bridge) for v in vms if v.mode == "bridge"}:
            for k in [k for k, o in current.items() if _of_link(k, o, br)]:
                del current[k]
            if br not in missing_bridges:  # there: used as it is (ours, or adopted)
                current.update((k, o) for k, o in draft.desired.items() if _of_link(k, o, br))
        draft.plan = self._up_diff(draft, exclusive)

    def _up_diff(self, draft: _UpDraft, nat_exclusive: bool) -> Plan:
        """``draft``'s diff compiled: a new NAT table made exclusively (``nat_exclusive``), a
        bridge-family table the other VMs do not have read (ours: added to; none: made
        exclusively)."""
        from fireroute.plan.compiler import compile
        from fireroute.plan.diff import DELETE, SET, Scope, diff

        table, current = draft.options.table, dict(draft.current)
        exclusive = {(NAT, table)} if nat_exclusive else set()
        bridge_table = ("nft table", (None, BRIDGE, table))
        if bridge_table in draft.desired and bridge_table not in current:
            if observe.check_table_owner(table, self.runner, BRIDGE):
                from fireroute.want.render import index
                from fireroute.want.tables import filter_layout

                current.update(index(filter_layout(table)))
            else:
                exclusive.add((BRIDGE, table))
        names, instance = Scope(v.name for v in draft.vms), draft.vms[0].owner
        ops = [op for op in diff(current, draft.desired, names, instance) if op.verb != DELETE]
        for op in ops:
            if op.id in draft.held:  # another VM's already: declared (an undo leaves it)
                op.verb = SET
        return Plan(compile(ops, exclusive, before=draft.forwarding))

    def _up_iptables(self, draft: _UpDraft) -> None:
        """The shared conntrack rule as iptables-nft-save shows it (there or not); what the
        first rule of all brings in, remembered."""
        from fireroute.plan import iptables
        from fireroute.want.iptables import conntrack

        rule = conntrack()
        present = observe.iptables_saved(self.runner)
        if any(iptables.comment_tag(line) == iptables.SHARED for _, line in present):
            draft.current[(rule.kind, rule.key)] = rule
            return
        draft.current.pop((rule.kind, rule.key), None)
        made = iptables.would_make(observe.nft_ip_chains(self.runner))
        if made:  # the first iptables VM on this host: remember what it brings in
            draft.meta[iptables.IPT_MADE] = jsontext.dumps(made)

    def _up_apply(self, store: Store, draft: _UpDraft, progress: Progress | None) -> None:
        """The rows reserved (``pending``), then the plan applied all or nothing (once again
        after AlreadyExists); on failure the rows and the forwarding record go again."""
        recorded = False
        if draft.forwarding != "1":  # for whichever state file's VM goes last (forwarding.py)
            from fireroute.kernel import forwarding as record

            recorded = record.record(draft.forwarding)
        try:
            store.reserve(draft.vms, draft.meta)
        except BaseException:
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
            self._up_undo(store, draft, recorded, exc)
            raise
        finally:
            self._policy_warning(draft.policy, draft.warnings)

    def _up_retry(self, draft: _UpDraft) -> None:
        """After AlreadyExists: the table read (a foreign one refused), the diff made again
        with nothing made exclusively (a table of ours left over is declared whole), and
        applied."""
        observe.check_table_owner(draft.options.table, self.runner)
        draft.plan = self._up_diff(draft, nat_exclusive=False)
        self.executor().apply_all(draft.plan)

    @staticmethod
    def _up_undo(store: Store, draft: _UpDraft, recorded: bool, exc: BaseException) -> None:
        """A failed apply: the rows and the forwarding record go; a new table's name nft
        cannot parse is said as bad input (else the caller raises ``exc`` again)."""
        store.remove([v.name for v in draft.vms], drop_meta=list(draft.meta))
        if recorded and read_sysctl(host.FORWARD_KEY) == draft.forwarding:
            # undone: forwarding has its old value again, and this record is nobody's
            # (found by review: it outlived a failed up and later undid the admin's "on")
            from fireroute.kernel import forwarding as record

            record.forget()
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
        """Steps removing ``vms``, as one diff: what they and the shared objects have (as
        recorded: their leases rendered, no per-VM read) against what the VMs that stay want
        (``desired`` of the shape without them). Shared objects (a bridge we made, a table,
        the shared iptables rule, forwarding) go with the last VM of this state file only
        when nothing of another state file's still uses them: the kernel is read at those
        thresholds only, and what it says is not ours to take is left out of ``current``."""
        plan = Plan()
        if not vms:
            return plan
        from fireroute.plan.compiler import compile
        from fireroute.plan.diff import DELETE, Scope, diff
        from fireroute.want import render

        instance = store.instance()
        rows = store.shapes()
        everyone, leaving = Population(rows), Population.of(vms)
        stay = everyone.less(leaving)
        remaining, going = shared(stay, instance), shared(leaving, instance)
        # (without their iptables rules: _iptables_found puts them in as found)
        rendered = [render.vm(v, rules=False) for v in vms]
        held = _held(vms, rendered)
        current = render.desired([], everyone, instance, held)
        for objs in rendered:
            current.update(render.index(objs))
        self._last_on_bridges(current, going.bridges - remaining.bridges, instance, vms)
        for family in (NAT, BRIDGE):
            gone = set(going.tables_of(family)) - set(remaining.tables_of(family))
            self._last_in_tables(current, family, sorted(gone), instance)
        cleanup = self._iptables_found(store, current, vms, remaining.conntrack, plan)
        if not remaining.forwarding:
            current.pop(FORWARDING, None)
            found = self._forwarding_found(store, instance, {v.tap for v in vms})
            if found is not None:
                current[FORWARDING] = found
            plan.forget.append(FORWARD_RECORD)
        desired = render.desired([], stay, instance, held)
        ops = diff(current, desired, Scope(v.name for v in vms), instance)
        steps = compile([op for op in ops if op.verb == DELETE], found=current)
        at = next((i for i, s in enumerate(steps) if s.tool == SYSCTL), len(steps))
        plan.add(*steps[:at], *cleanup, *steps[at:])  # the made chains before forwarding
        return plan

    def _last_on_bridges(
        self, current: Index, bridges: frozenset[str], instance: str, vms: list[Vm]
    ) -> None:
        """A bridge no VM that stays is on goes only if it is ours (its alias) and nobody
        else's link is on it: else it is left out of ``current``."""
        from fireroute.want.bridge import alias

        leaving = {v.tap for v in vms}
        for br in sorted(bridges):
            ours = observe.link_alias(br, self.runner) == alias(instance, br)
            if ours and not set(observe.bridge_ports(br, self.runner)) - leaving:
                continue  # ours, and nobody left on it
            for k in [k for k, o in current.items() if _of_link(k, o, br)]:
                del current[k]

    def _last_in_tables(
        self, current: Index, family: str, tables: list[str], instance: str
    ) -> None:
        """A table no VM that stays uses, read once (its owner, the elements in it): absent,
        nothing of it is in ``current``; holding another state file's elements, it stays (its
        table, sets and chains left out of ``current``), and only our elements go; ours only,
        it goes, and its elements with it (``current`` holds ours only: their deletes would
        go with the table's, so they are left out of ``current`` and the diff)."""
        for table in tables:
            foreign = observe.last_in_table(table, instance, self.runner, family)
            if foreign is not None and not foreign:
                elements = [k for k in current if k[0] == "nft element"]
                for k in [k for k in elements if _in_table(k, family, table)]:
                    del current[k]
                continue
            structure = ("nft table", "nft set", "nft chain")
            for k in [k for k in current if _in_table(k, family, table)]:
                if foreign is None or k[0] in structure:
                    del current[k]

    def _iptables_found(
        self,
        store: Store,
        current: Index,
        vms: list[Vm],
        wanted: bool,
        plan: Plan,
        read: list[IptRule] | None = None,
    ) -> list[Step]:
        """The iptables rules as found (iptables-nft-save, read when a VM with rules goes:
        a restore batch that deletes a missing rule fails whole) in ``current`` for those
        recorded; with the last rules of any VM (``wanted``: the shared rule stays), the nft
        chains and tables fireroute's first rules made go too (their steps, returned).
        ``read``: the rules a whole read found (teardown: every rule of this state file's
        goes)."""
        from fireroute.plan import iptables

        ipt = [v for v in vms if modes.nat_member(v) and _has_rules(v)]
        if not ipt:
            return []
        from fireroute.kernel.read import rule_of

        if read is None:
            present = observe.iptables_saved(self.runner)
            tags = {iptables.TAG + v.tag for v in ipt}
        else:
            present = [(r.table, r.saved) for r in read]
            tags = _tags_of(store.instance(), present)
        for k in [k for k in current if k[0] == "iptables rule"]:
            del current[k]
        found = [(t, line, iptables.comment_tag(line)) for t, line in present]
        others = any(tag and tag != iptables.SHARED and tag not in tags for _, _, tag in found)
        for t, line, tag in found:  # the shared rule stays while another VM's rule does
            if tag is not None and not (others and tag == iptables.SHARED):
                rule = rule_of(t, line)
                current[(rule.kind, rule.key)] = rule
        if wanted or others:
            return []
        return self._made_chains(store, [(t, line) for t, line, tag in found if tag is None], plan)

    def _made_chains(self, store: Store, left: list[tuple[str, str]], plan: Plan) -> list[Step]:
        """The nft chains and tables fireroute's first iptables rules made, once its last
        rules go (``left``: the rules that stay, none of them fireroute's)."""
        from fireroute.plan import iptables

        made = store.meta(iptables.IPT_MADE)
        if made is None:
            return []
        plan.forget.append(iptables.IPT_MADE)
        script = iptables.cleanup(
            _strings(jsontext.loads(made)), left, observe.nft_ip_chains(self.runner)
        )
        what = "remove the iptables-nft chains fireroute made"
        return [Step(NFT, script, what)] if script else []

    def _forwarding_found(
        self, store: Store, instance: str, leaving: set[str], own: bool = True
    ) -> Forwarding | None:
        """Forwarding as it is, with what it was before fireroute switched it on (the
        namespace's record, whichever state file made it, else, when ``instance`` is
        ``store``'s own (``own``), the state file's record); None while a link of fireroute's
        of another state file (not ``leaving``) is left in this namespace."""
        from fireroute.kernel import forwarding as record

        if set(observe.foreign_links(instance, self.runner)) - leaving:
            return None
        before = record.recorded() or (store.meta(FORWARD_BEFORE) if own else None)
        return Forwarding(read_sysctl(host.FORWARD_KEY), before)

    def _down_locked(self, store: Store, vms: list[Vm], dry_run: bool) -> Plan:
        plan = self._down_plan(store, vms)
        if dry_run or not vms:
            return plan
        names = [v.name for v in vms]
        store.set_state(names, "removing")
        self.executor().apply_best_effort(plan)
        remaining = store.count() - len(vms)
        done(plan)
        store.remove(names, drop_meta=([FORWARD_BEFORE] if remaining == 0 else []) + plan.forget)
        return plan

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
            names = [v.name for v in vms]
            store.set_state(names, "removing")
            self.executor().apply_best_effort(plan)
            done(plan)
            drop = [FORWARD_BEFORE] if vms else []
            store.remove(names, drop_meta=drop + plan.forget)
            return vms, plan

    def _teardown_plan(self, store: Store, vms: list[Vm], src: Source | None = None) -> Plan:
        """One diff: everything read (every object tagged for this state file, our tables)
        and what the leases say they have, against nothing wanted. What is another state
        file's, and a shared object something else still uses, stays (plan/diff.py).
        ``src``: where the host is read (default: this manager's runner)."""
        from fireroute.kernel.read import Source, read
        from fireroute.plan.compiler import compile
        from fireroute.plan.diff import DELETE, diff
        from fireroute.want import render

        plan = Plan()
        instance = store.instance()
        found = read(src or Source(self.runner), vms)
        current = render.desired(vms, None, instance)
        _only_read_tables(current, found.objs, found.foreign_tables)
        current.update(found.objs)  # what is there, as it is
        _tables_ours(current)
        cleanup = self._iptables_found(store, current, vms, False, plan, found.ipt)
        current.pop(FORWARDING, None)
        if vms:  # (with the last of this state file's VMs, as down does)
            fwd = self._forwarding_found(store, instance, {v.tap for v in vms})
            if fwd is not None:
                current[FORWARDING] = fwd
            plan.forget.append(FORWARD_RECORD)
        ops = [op for op in diff(current, {}, instance=instance) if op.verb == DELETE]
        steps = compile(ops, found=current)
        at = next((i for i, s in enumerate(steps) if s.tool == SYSCTL), len(steps))
        plan.add(*steps[:at], *cleanup, *steps[at:])  # the made chains before forwarding
        return plan

    # -- reads -----------------------------------------------------------------------------
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


__all__ = ["Manager", "UpResult", "FirerouteError"]


def _strings(doc: object) -> list[str]:
    """A list of strings recorded in the state file's meta (anything else: none)."""
    return [x for x in doc if isinstance(x, str)] if isinstance(doc, list) else []


def _held(vms: list[Vm], rendered: list[list[Obj]]) -> dict[str, set[str]]:
    """NAT table -> the sets and maps the elements of ``vms`` go into: the parts of the table
    (want/tables.py PARTS) their options imply it holds (``render.desired``'s ``held``).
    ``rendered``: each VM's objects (``render.vm``), whose NAT elements are its own of
    ``nft.nat_elements``; a masquerading bridge guest's shared egress element is the rest."""
    from fireroute.want.nft import NftElement

    out: dict[str, set[str]] = {}
    for v, objs in zip(vms, rendered, strict=True):
        if v.backend == "nft" and modes.nat_member(v):
            sets = out.setdefault(v.table, set())
            sets.update(o.set for o in objs if isinstance(o, NftElement) and o.family == NAT)
            if modes.masquerading_bridge(v):
                sets.add("egress")
    return out


def _joined(shape: Population, vms: list[Vm]) -> Population:
    """``shape`` with ``vms`` counted in."""
    out = Population.of(vms)
    for k, n in shape.counts.items():
        out.counts[k] = out.counts.get(k, 0) + n
    return out


def _egress_again(current: Index, vms: list[Vm]) -> set[tuple]:
    """A masquerading bridge guest adds its bridge's egress element whether or not another
    guest's up added it (the add is idempotent; a lost one comes back): not in ``current``.
    Returns the keys of those another guest's up added (the undo leaves them)."""
    masq = {f'"{v.options.bridge}" . "{v.uplink}"' for v in vms if modes.masquerading_bridge(v)}
    held = {
        k for k, o in current.items() if k[0] == "nft element" and o.vm is None
        and o.value in masq  # type: ignore[attr-defined]
    }  # fmt: skip
    for k in held:
        del current[k]
    return held


def _has_rules(vm: Vm) -> bool:
    """Has a NAT member iptables rules of its own (its backend's, or the FORWARD-policy fix)?"""
    return vm.backend == "iptables" or bool(vm.options.fix_forward_policy)


def _of_link(key: tuple, obj: Obj, name: str) -> bool:
    """Is ``obj`` the root namespace's link ``name`` or one of its addresses?"""
    return key == ("link", (None, name)) or (obj.kind == "addr" and key[1][:2] == (None, name))


def _in_table(key: tuple, family: str, table: str) -> bool:
    """Is ``key`` a root namespace table's, or of a set, chain or element in it?"""
    return key[0].startswith("nft ") and key[1][:3] == (None, family, table)


def _only_read_tables(recorded: Index, found: Index, foreign: list[tuple[str, str]]) -> None:
    """The recorded tables the whole read did not find are not there (nothing of them is
    taken), or are not ours: refused, as down refuses them."""
    read = {k[1][1:3] for k in found if k[0] == "nft table" and k[1][0] is None}
    for k in [k for k in recorded if k[0].startswith("nft ") and k[1][0] is None]:
        if k[1][1:3] not in read:
            if k[0] == "nft table" and k[1][1:3] in foreign:
                raise observe.not_ours(k[1][2], k[1][1])
            del recorded[k]


def _tables_ours(current: Index) -> None:
    """The root namespace's tables the read found are ours (it reads those with our
    comment)."""
    from fireroute.want.tables import shared_table

    for k, o in current.items():
        if o.kind == "nft table" and o.ns is None:
            current[k] = shared_table(k[1][1], k[1][2])


def _tags_of(instance: str, rules: list[tuple[str, str]]) -> set[str]:
    """The comments of the rules tagged for a VM of the state file ``instance``."""
    from fireroute.plan import iptables

    mine = iptables.TAG + instance + ":"
    tags = (iptables.comment_tag(line) or "" for _, line in rules)
    return {t for t in tags if t.startswith(mine)}
