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
    from collections.abc import Iterable

    from fireroute import model
    from fireroute.manager import Manager

__all__ = [
    "Host",
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
        self._record = vm

    def as_dict(self) -> dict[str, object]:
        from fireroute.render import record

        return record.as_dict(self._record)

    def __repr__(self) -> str:
        return f"Vm({self.name!r}, tap={self.tap!r}, guest_ip={self.guest_ip!r}, mac={self.mac!r})"


class Host:
    """The VMs of one state file on this host (default: ``$FIREROUTE_STATE`` or
    ``/var/lib/fireroute/state.db``). Not shared between threads: give each its own."""

    def __init__(self, state: str | os.PathLike[str] | None = None, *, in_process: bool = False):
        from fireroute.manager import Manager
        from fireroute.state.store import default_path

        self.state = os.fspath(state) if state is not None else default_path()
        executor = None
        if in_process:
            from fireroute.kernel.inproc import InProcessExecutor

            shared = InProcessExecutor()

            def executor() -> InProcessExecutor:
                shared.count = 0  # its fault-injection counter counts per plan
                return shared

        self._manager: Manager = Manager(self.state, executor=executor, keep_store=in_process)

    # -- bringing VMs up and down -----------------------------------------------------------
    def up(self, name: str, *, skip_conflicts: bool = False, **options: object) -> Vm:
        """Bring one VM's network up (a no-op if it is up with equal options) and return it."""
        return self.up_many([name], skip_conflicts=skip_conflicts, **options)[0]

    def up_many(
        self, names: Iterable[str], *, skip_conflicts: bool = False, **options: object
    ) -> list[Vm]:
        """Several VMs with the same options, in one batch (all or nothing)."""
        from fireroute import request

        res = self._manager.up(list(names), request.options(options), skip_conflicts=skip_conflicts)
        return [Vm(v) for v in res.vms]

    def plan_up(self, name: str, **options: object) -> str:
        """The commands ``up`` would run, as a person would type them; nothing changes."""
        from fireroute import request
        from fireroute.plan.steps import as_commands

        res = self._manager.up([name], request.options(options), dry_run=True)
        return as_commands(res.plan)

    def down(self, *names: str) -> list[str]:
        """Take VMs' networks down; returns the names that were up (a name that is not is
        no error: down is idempotent)."""
        if not names:
            raise UsageError("name at least one vm")
        vms, _plan = self._manager.down(list(names))
        return [v.name for v in vms]

    # -- reading ----------------------------------------------------------------------------
    def get(self, name: str) -> Vm:
        """One VM (NotFound if this state file has no such VM)."""
        return Vm(self._manager.show(name))

    def list(self) -> list[Vm]:
        return [Vm(v) for v in self._manager.ls()]

    def check(self, *names: str) -> dict[str, object]:
        """Desired state against the kernel: ``{"ok", "vms", "shared", "orphans"}``, as
        ``check --json`` prints it (for ``names`` only, when given: then without orphans)."""
        from fireroute import repair

        return repair.check(self._manager, list(names)).as_json()

    def policy(self, name: str, **changes: object) -> Vm:
        """Change a running VM's egress policy: ``egress`` ("internet", "public", "none"),
        ``allow_out`` and ``deny_out`` (lists of CIDRs; each given replaces the VM's), in one
        transaction; connections the new policy forbids are cut."""
        return Vm(self._manager.policy(name, changes))

    def publish(self, name: str, *specs: str) -> Vm:
        """Forward host ports to a running VM (``--publish`` specs: ``[ADDR:]PORT:GUESTPORT
        [/udp]``); a port another VM holds is a ConflictError."""
        return Vm(self._manager.publish(name, list(specs), [])[0])

    def unpublish(self, name: str, *specs: str) -> Vm:
        """Stop forwarding the given host ports (NotFound for a spec the VM does not have)."""
        return Vm(self._manager.publish(name, [], list(specs))[0])

    def stats(self, *names: str) -> builtins.list[dict[str, object]]:
        """Per-VM traffic counted by the kernel: ``name``, ``counted`` and ``tx_bytes``,
        ``tx_packets``, ``rx_bytes``, ``rx_packets`` (sent and received by the guest; None
        where not counted: bridge guests, the iptables backend)."""
        from fireroute import stats

        return stats.read(self._manager, list(names))

    # -- repair and cleanup -----------------------------------------------------------------
    def gc(self, state_id: str | None = None) -> str:
        """Finish half-made VMs and remove what is tagged for this state file (or for the
        lost state file ``state_id``) but has no lease; returns the commands that ran."""
        from fireroute import repair
        from fireroute.plan.steps import as_commands

        return as_commands(repair.gc(self._manager, instance=state_id))

    def restore(self, *, dry_run: bool = False) -> str:
        """Make the kernel match the state file again; returns the commands (dry run: that
        would run)."""
        from fireroute import repair
        from fireroute.plan.steps import as_commands

        return as_commands(repair.restore(self._manager, dry_run=dry_run))

    def teardown(self) -> builtins.list[str]:
        """Every VM of this state file down and everything tagged for it removed."""
        vms, _plan = self._manager.teardown()
        return [v.name for v in vms]

    # -- Firecracker ------------------------------------------------------------------------
    # settings: timeout, mtu, boot_source, rx_rate, tx_rate, burst, rx_ops, tx_ops, mmds,
    # mmds_version, mmds_address (the CLI's flags); iface_id None: the one recorded by up
    def attach(self, name: str, socket: str, *, iface_id: str | None = None, **settings) -> dict:  # noqa: ANN003
        """Hand a VM that is up to a Firecracker that has not started (its interface; with
        ``boot_source=True`` the ``ip=`` argument, with ``mmds=True`` MMDS); returns what
        was sent (``FirecrackerFailed`` with Firecracker's own fault message if refused)."""
        from fireroute.firecracker import verbs

        req = verbs.AttachRequest(socket, **settings)  # checked before anything is sent
        return verbs.attach(verbs.active_vm(self._manager, name), iface_id, req)

    def up_attached(
        self, name: str, socket: str, *, attach: dict | None = None, **options: object
    ) -> tuple[Vm, dict]:
        """``up``, then ``attach`` (its settings in ``attach``); a failed attach takes the
        network this call made down again."""
        from fireroute import request
        from fireroute.firecracker import verbs

        req = verbs.AttachRequest(socket, **(attach or {}))
        vm, report = verbs.up_and_attach(self._manager, name, request.options(options), req)
        return Vm(vm), report

    def limit(
        self, name: str, socket: str, *, iface_id: str | None = None, timeout: float = 5.0,
        **rates: str,
    ) -> dict:  # fmt: skip
        """Change a running VM's rate limits (rx_rate, tx_rate, burst, rx_ops, tx_ops; "off"
        removes one) with ``PATCH /network-interfaces``; returns the body sent."""
        from fireroute.firecracker import verbs

        rx, tx = verbs.rate_limiters(**rates)
        verbs.check_limits(rx, tx)
        vm = verbs.active_vm(self._manager, name)
        return verbs.limit(vm, iface_id, socket, verbs.check_timeout(timeout), rx, tx)

    def config(
        self, name: str, existing: dict | None = None, *, iface_id: str | None = None, **rates: str
    ) -> dict:
        """A Firecracker ``--config-file`` document (``existing``, or a minimal one) with the
        VM's interface and ``ip=`` argument merged in."""
        from fireroute.firecracker import verbs

        rx, tx = verbs.rate_limiters(**rates)
        return verbs.config_entry(self._manager, name, iface_id, rx, tx, existing)
