"""fireroute's Python API: the verbs of the command line, called in-process.

    import fireroute

    host = fireroute.Host(state="/var/lib/fireroute/state.db")
    vm = host.up("web-1", allow_host_ports=["53/udp"])
    vm.tap, vm.guest_ip, vm.mac, vm.boot_args      # "fr-web-1", "172.16.0.2", ...
    vm.firecracker                                 # the PUT /network-interfaces body
    host.down("web-1")

Options are the CLI's flags as keyword arguments (``--allow-host-port`` is
``allow_host_ports``, a list; flags are booleans), checked by the same code as the CLI's and
the daemon's (:mod:`fireroute.request`). Errors are :mod:`fireroute.errors`' tree: callers
branch on the type (``UsageError``: bad input; ``ConflictError``: it clashes with the host or
another VM; ``NotFound``; ``Busy``: the state file stayed locked; ``KernelError``), and the
message is the line the CLI would print. Every call takes the state file's lock, so the API,
the CLI and ``fireroute serve`` can be used on one state file at once.

``Host(state, in_process=True)`` runs the kernel changes without starting ``ip``/``nft``
processes where it can (a long-lived caller: about 1.5 ms for a VM instead of about 10 ms);
the changes, and what ``plan`` prints, are the same.

``Host`` is the one core API: every door (the CLI, the CNI plugin, ``fireroute serve``) calls
it and nothing below it. Beside the verbs above, which answer with :class:`Vm` snapshots, it
has the doors' verbs, which answer with the model's records (:class:`fireroute.model.Vm`,
what the renders take) and, for a verb that changes the host, an :class:`Outcome` (its
records, the commands it ran or in a dry run would run, its warnings): ``show``, ``ls``,
``bring_up``, ``take_down``, ``set_policy``, ``set_ports``, ``sweep``, ``check_report``,
``collect``, ``reconcile``, ``doctor``.
"""

from __future__ import annotations

import os

from fireroute.errors import (
    Busy,
    ConflictError,
    FirerouteError,
    KernelError,
    NotFound,
    PartialFailure,
    PermissionDenied,
    PoolExhausted,
    StateError,
    UsageError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterable, Mapping

    from fireroute import model
    from fireroute.doctor import Finding
    from fireroute.kernel.inproc import InProcessExecutor
    from fireroute.manager import Manager
    from fireroute.plan.steps import Plan
    from fireroute.repair import Report

    Progress = Callable[[str], None]
    Warn = Callable[[str], None]

__all__ = [
    "Host",
    "Outcome",
    "Vm",
    "Busy",
    "ConflictError",
    "FirerouteError",
    "KernelError",
    "NotFound",
    "PartialFailure",
    "PermissionDenied",
    "PoolExhausted",
    "StateError",
    "UsageError",
]


class Vm:
    """One VM's network as fireroute recorded it (a snapshot: it does not change after).

    ``tap`` is the device Firecracker opens (in clone mode, inside the clone's namespace);
    ``host_dev`` the VM's device on the host (the tap, or the clone's veth end);
    ``gateway`` the guest's router (None for a DHCP bridge guest); ``boot_args`` the kernel
    ``ip=`` argument; ``firecracker`` the body of ``PUT /network-interfaces/{iface_id}``;
    ``config`` the entry for a ``--config-file``; ``dns`` the guest's name servers; for a CNI
    attachment (mode ``cni``) ``netns``, ``container``, ``ifname`` and ``network`` (None
    otherwise) and ``link_macs``, the MACs of its links (host veth, namespace veth, tap);
    ``ipv6`` (a VM with IPv6) its ``address``, ``prefix``, ``gateway`` and ``block``, else None;
    ``as_dict()`` the JSON that ``show --format json`` prints and ``fireroute serve``
    answers."""

    __slots__ = (
        "name",
        "state",
        "mode",
        "tap",
        "host_dev",
        "guest_ip",
        "gateway",
        "prefix",
        "mac",
        "uplink",
        "boot_args",
        "firecracker",
        "config",
        "dns",
        "netns",
        "container",
        "ifname",
        "network",
        "link_macs",
        "ipv6",
        "_record",
    )

    def __init__(self, vm: model.Vm) -> None:
        from fireroute.render import firecracker, guest

        self.name: str = vm.name
        self.state: str = vm.state
        self.mode: str = vm.mode
        self.tap: str = vm.vm_tap
        self.host_dev: str = vm.tap
        self.guest_ip: str | None = str(vm.guest_ip) if vm.guest_ip else None
        gateway = vm.options.gateway if vm.mode == "bridge" else vm.tap_ip
        self.gateway: str | None = str(gateway) if gateway else None
        self.prefix: int = vm.prefix
        self.mac: str = vm.mac
        self.uplink: str = vm.uplink
        self.boot_args: str = guest.boot_arg(vm)
        self.firecracker: dict[str, object] = firecracker.interface(vm)
        self.config: dict[str, object] = firecracker.config_fragment(vm)
        self.dns: list[str] = [str(d) for d in vm.options.dns]
        self.netns: str | None = vm.netns if vm.mode == "cni" else None
        self.container: str | None = vm.options.container
        self.ifname: str | None = vm.options.ifname
        self.network: str | None = vm.options.network
        self.link_macs: dict[str, str] = {}
        if vm.mode == "cni" and vm.guest_ip is not None:
            from fireroute.addressing import CNI_LINK_MACS, cni_link_mac

            self.link_macs = {k: cni_link_mac(k, vm.guest_ip).lower() for k in CNI_LINK_MACS}
        from fireroute.render.record import ipv6

        self.ipv6: dict[str, object] | None = ipv6(vm)
        self._record = vm

    @property
    def record(self) -> model.Vm:
        """The model's record of the VM (what :mod:`fireroute.render` and the Firecracker
        verbs take)."""
        return self._record

    def as_dict(self) -> dict[str, object]:
        from fireroute.render import record

        return record.as_dict(self._record)

    def __repr__(self) -> str:
        return f"Vm({self.name!r}, tap={self.tap!r}, guest_ip={self.guest_ip!r}, mac={self.mac!r})"


class Outcome:
    """What a verb that changes the host did or, in a dry run, would do: ``vms`` the records
    it touched (:class:`fireroute.model.Vm`), ``changed`` whether it changed the host (for
    ``up``: False when every VM was already up as asked), ``warnings`` one line each,
    ``steps`` the number of commands and ``commands`` the commands as a person would type
    them (what ran, or would run)."""

    __slots__ = ("vms", "changed", "warnings", "_plan")

    def __init__(
        self,
        vms: list[model.Vm],
        plan: Plan | None,
        *,
        changed: bool | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.vms = vms
        self._plan = plan
        self.changed: bool = bool(plan) if changed is None else changed
        self.warnings: list[str] = warnings or []

    @property
    def steps(self) -> int:
        return len(self._plan.steps) if self._plan is not None else 0

    @property
    def commands(self) -> str:
        if self._plan is None:
            return ""
        from fireroute.plan.steps import as_commands

        return as_commands(self._plan)

    def __repr__(self) -> str:
        return f"Outcome({[v.name for v in self.vms]!r}, steps={self.steps})"


class Host:
    """The VMs of one state file on this host (default: ``$FIREROUTE_STATE`` or
    ``/var/lib/fireroute/state.db``). Not shared between threads: give each its own. A
    ``Host(..., in_process=True)`` may be closed (``close()``, or ``with``) to let its
    in-process executor go before the process ends. ``quiet``: nobody reads this Host's
    warnings (the daemon's), so ``up`` skips the reads only they need (the FORWARD policy)."""

    def __init__(
        self,
        state: str | os.PathLike[str] | None = None,
        *,
        in_process: bool = False,
        quiet: bool = False,
    ):
        from fireroute.manager import Manager
        from fireroute.state.store import default_path

        self.state = os.fspath(state) if state is not None else default_path()
        executor = None
        self._shared = None
        if in_process:
            from fireroute.kernel.inproc import InProcessExecutor

            shared = self._shared = InProcessExecutor()

            def executor() -> InProcessExecutor:
                shared.count = 0  # its fault-injection counter counts per plan
                return shared

        self._manager: Manager = Manager(self.state, executor=executor, keep_store=in_process)
        self._manager.read_policy = not quiet

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()

    @property
    def in_process_executor(self) -> InProcessExecutor | None:
        """The executor every plan of an ``in_process`` Host runs on (None for the others)."""
        return self._shared

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bringing VMs up and down -----------------------------------------------------------
    def up(self, name: str, *, skip_conflicts: bool = False, **options: object) -> Vm:
        """Bring one VM's network up (a no-op if it is up with equal options) and return it."""
        return self.up_many([name], skip_conflicts=skip_conflicts, **options)[0]

    def up_many(
        self, names: Iterable[str], *, skip_conflicts: bool = False, **options: object
    ) -> builtins.list[Vm]:
        """Several VMs with the same options, in one batch (all or nothing)."""
        done = self.bring_up(names, options, skip_conflicts=skip_conflicts)
        return [Vm(v) for v in done.vms]

    def plan_up(self, name: str, **options: object) -> str:
        """The commands ``up`` would run, as a person would type them; nothing changes."""
        return self.bring_up([name], options, dry_run=True).commands

    def down(self, *names: str) -> builtins.list[str]:
        """Take VMs' networks down; returns the names that were up (a name that is not is
        no error: down is idempotent)."""
        if not names:
            raise UsageError("name at least one vm")
        return [v.name for v in self.take_down(names).vms]

    # -- ready VMs (the daemon's: fireroute/ready.py) ---------------------------------------
    def ready_fill(self, count: int, options: dict[str, object], most: int = 1) -> int:
        """Up to ``most`` more ready VMs (NAT VMs named ``_ready-<n>``, made ahead) of
        ``options``, so that there are at most ``count``; returns how many there are."""
        from fireroute import ready, request

        return ready.fill(self._manager, request.options(options), count, most)

    def ready_claim(self, name: str, options: dict[str, object]) -> Vm | None:
        """VM ``name`` made by renaming a ready VM of ``options``; None (nothing changed) if
        there is none, or ``name`` is a VM already."""
        from fireroute import ready, request

        vm = ready.claim(self._manager, name, request.options(options))
        return None if vm is None else Vm(vm)

    def ready_drain(self) -> builtins.list[str]:
        """Every ready VM down; returns their names."""
        from fireroute import ready

        return ready.drain(self._manager)

    # -- reading ----------------------------------------------------------------------------
    def get(self, name: str) -> Vm:
        """One VM (NotFound if this state file has no such VM)."""
        return Vm(self.show(name))

    def list(self) -> builtins.list[Vm]:
        return [Vm(v) for v in self.ls()]

    def check(self, *names: str) -> dict[str, object]:
        """Desired state against the kernel: ``{"ok", "vms", "shared", "orphans"}``, as
        ``check --json`` prints it (for ``names`` only, when given: then without orphans)."""
        return self.check_report(names).as_json()

    def policy(self, name: str, **changes: object) -> Vm:
        """Change a running VM's egress policy: ``egress`` ("internet", "public", "none"),
        ``allow_out`` and ``deny_out`` (lists of CIDRs; each given replaces the VM's), in one
        transaction; connections the new policy forbids are cut."""
        return Vm(self.set_policy(name, changes))

    def publish(self, name: str, *specs: str) -> Vm:
        """Forward host ports to a running VM (``--publish`` specs: ``[ADDR:]PORT:GUESTPORT
        [/udp]``); a port another VM holds is a ConflictError."""
        return Vm(self.set_ports(name, specs, ()).vms[0])

    def unpublish(self, name: str, *specs: str) -> Vm:
        """Stop forwarding the given host ports (NotFound for a spec the VM does not have)."""
        return Vm(self.set_ports(name, (), specs).vms[0])

    def stats(self, *names: str) -> builtins.list[dict[str, object]]:
        """Per-VM traffic counted by the kernel: ``name``, ``counted`` and ``tx_bytes``,
        ``tx_packets``, ``rx_bytes``, ``rx_packets`` (sent and received by the guest; None
        where not counted: bridge guests, the iptables backend)."""
        from fireroute import stats

        return stats.read(self.ls(), list(names), self._manager.runner)

    # -- repair and cleanup -----------------------------------------------------------------
    def gc(self, state_id: str | None = None) -> str:
        """Finish half-made VMs and remove what is tagged for this state file (or for the
        lost state file ``state_id``) but has no lease; returns the commands that ran."""
        return self.collect(state_id=state_id).commands

    def restore(self, *, dry_run: bool = False) -> str:
        """Make the kernel match the state file again; returns the commands (dry run: that
        would run)."""
        return self.reconcile(dry_run=dry_run).commands

    def teardown(self) -> builtins.list[str]:
        """Every VM of this state file down and everything tagged for it removed."""
        return [v.name for v in self.sweep().vms]

    # -- the doors' verbs: the model's records, the plan, the warnings ------------------------
    def show(self, name: str) -> model.Vm:
        """The record of VM ``name`` (NotFound if this state file has no such VM)."""
        return self._manager.show(name)

    def ls(self) -> builtins.list[model.Vm]:
        """Every VM's record, in the state file's order."""
        return self._manager.ls()

    def bring_up(
        self,
        names: Iterable[str],
        options: model.Options | dict[str, object],
        *,
        skip_conflicts: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> Outcome:
        """``up`` of ``names`` with ``options`` (checked :class:`fireroute.model.Options`,
        or the keyword options of :meth:`up`); ``progress`` is called with a line now and
        then on a long batch."""
        from fireroute import request

        if isinstance(options, dict):  # the API's keyword options, not yet checked
            options = request.options(options)
        res = self._manager.up(
            list(names),
            options,
            skip_conflicts=skip_conflicts,
            dry_run=dry_run,
            progress=progress,
        )
        return Outcome(res.vms, res.plan, changed=res.changed, warnings=res.warnings)

    def take_down(
        self, names: Iterable[str], *, everything: bool = False, dry_run: bool = False
    ) -> Outcome:
        """``down`` of ``names`` (or, ``everything``, of every VM); ``vms`` the ones that
        were up."""
        vms, plan = self._manager.down(list(names), everything=everything, dry_run=dry_run)
        return Outcome(vms, plan, changed=not dry_run and bool(vms))

    def set_policy(
        self, name: str, changes: Mapping[str, object], *, dry_run: bool = False
    ) -> model.Vm:
        """``policy``: the VM's record with its new egress policy (a dry run changes
        nothing)."""
        return self._manager.policy(name, dict(changes), dry_run=dry_run)

    def set_ports(
        self, name: str, add: Iterable[str], remove: Iterable[str], *, dry_run: bool = False
    ) -> Outcome:
        """``publish`` the ``add`` specs and ``unpublish`` the ``remove`` ones."""
        vm, plan = self._manager.publish(name, list(add), list(remove), dry_run=dry_run)
        return Outcome([vm], plan, changed=not dry_run and bool(plan))

    def sweep(self, *, dry_run: bool = False) -> Outcome:
        """``teardown``; ``vms`` the VMs taken down."""
        vms, plan = self._manager.teardown(dry_run=dry_run)
        return Outcome(vms, plan, changed=not dry_run and bool(plan))

    def check_report(self, names: Iterable[str] = ()) -> Report:
        """``check``: every difference, per VM, per shared object, and the orphans."""
        from fireroute import repair

        return repair.check(self._manager, list(names))

    def collect(self, *, state_id: str | None = None, dry_run: bool = False) -> Outcome:
        """``gc`` (of the lost state file ``state_id``, when given)."""
        from fireroute import repair

        plan = repair.gc(self._manager, dry_run=dry_run, instance=state_id)
        return Outcome([], plan, changed=not dry_run and bool(plan))

    def reconcile(self, *, dry_run: bool = False) -> Outcome:
        """``restore``."""
        from fireroute import repair

        plan = repair.restore(self._manager, dry_run=dry_run)
        return Outcome([], plan, changed=not dry_run and bool(plan))

    def doctor(self) -> builtins.list[Finding]:
        """What this host lacks or has wrong for fireroute (a broken state file too)."""
        from fireroute import doctor

        try:
            count = len(self.ls())
        except Exception:  # noqa: BLE001 - doctor must still run with a broken state file
            count = 0
        return doctor.checks(count)

    # -- Firecracker ------------------------------------------------------------------------
    # settings: timeout, mtu, boot_source, rx_rate, tx_rate, burst, rx_ops, tx_ops, mmds,
    # mmds_version, mmds_address (the CLI's flags); iface_id None: the one recorded by up;
    # warn, if given, is called with each warning as it happens
    def attach(
        self, name: str, socket: str, *, iface_id: str | None = None, warn: Warn | None = None,
        **settings,  # noqa: ANN003
    ) -> dict:  # fmt: skip
        """Hand a VM that is up to a Firecracker that has not started (its interface; with
        ``boot_source=True`` the ``ip=`` argument, with ``mmds=True`` MMDS); returns what
        was sent (``FirecrackerFailed`` with Firecracker's own fault message if refused)."""
        from fireroute.firecracker import verbs

        req = verbs.AttachRequest(socket, **settings)  # checked before anything is sent
        return verbs.attach(verbs.active_vm(self, name), iface_id, req, warn=warn)

    def up_attached(
        self,
        name: str,
        socket: str,
        *,
        attach: dict | None = None,
        skip_conflicts: bool = False,
        warn: Warn | None = None,
        **options: object,
    ) -> tuple[Vm, dict]:
        """``up``, then ``attach`` (its settings in ``attach``); a failed attach takes the
        network this call made down again."""
        from fireroute import request
        from fireroute.firecracker import verbs

        req = verbs.AttachRequest(socket, **(attach or {}))
        checked = request.options(options)
        vm, report = verbs.up_and_attach(
            self, name, checked, req, skip_conflicts=skip_conflicts, warn=warn
        )
        return Vm(vm), report

    def limit(
        self, name: str, socket: str, *, iface_id: str | None = None, timeout: float = 5.0,
        **rates: str,
    ) -> dict:  # fmt: skip
        """Change a running VM's rate limits (rx_rate, tx_rate, burst, rx_ops, tx_ops; "off"
        removes one) with ``PATCH /network-interfaces``; returns the body sent."""
        from fireroute.firecracker import verbs

        timeout = verbs.check_timeout(timeout)
        rx, tx = verbs.rate_limiters(**rates)
        verbs.check_limits(rx, tx)
        vm = verbs.active_vm(self, name)
        return verbs.limit(vm, iface_id, socket, timeout, rx, tx)

    def config(
        self,
        name: str,
        existing: dict | None = None,
        *,
        iface_id: str | None = None,
        source: str | os.PathLike[str] | None = None,
        **rates: str,
    ) -> dict:
        """A Firecracker ``--config-file`` document (``existing``, or a minimal one) with the
        VM's interface and ``ip=`` argument merged in (``source``: where ``existing`` was
        read, named in the message of a merge that cannot be made)."""
        from fireroute.firecracker import verbs

        rx, tx = verbs.rate_limiters(**rates)
        return verbs.config_entry(self, name, iface_id, rx, tx, existing, source=source)
