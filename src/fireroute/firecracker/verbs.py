"""The Firecracker verbs: attach a VM's network to a Firecracker, bring it up and attach it in
one step, change its rate limits, merge it into a ``--config-file``.

Core, for every door (CLI, Python API, daemon): plain values in, plain values out, errors from
:mod:`fireroute.errors`; nothing here parses arguments or prints. Keyword names follow the CLI
flags (``rx_rate`` is ``--rx-rate``), and so do the messages. Every value is checked before the
first request is sent; Firecracker's own errors are passed on verbatim (its
``fault_message``), with what was being sent, as one :class:`FirecrackerFailed` line.

``host`` arguments are the core, a :class:`fireroute.Host` (only its doors' verbs ``show``,
``ls``, ``bring_up`` and ``take_down`` are used: :class:`Core`). Importing this module loads
neither the API client nor the core: a caller pays for what it calls.
"""

from __future__ import annotations

import os

from fireroute.errors import ConflictError, FirecrackerFailed, FirerouteError, UsageError
from fireroute.render import guest
from fireroute.render.guest import DEFAULT_MMDS_ADDRESS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Protocol

    from fireroute.model import Options, Vm

    Warn = Callable[[str], None]

    class Done(Protocol):
        vms: list[Vm]
        changed: bool

    class Core(Protocol):
        """What the verbs call of the core (:class:`fireroute.Host`): named here, not
        imported, because the core calls these verbs."""

        def show(self, name: str) -> Vm: ...
        def ls(self) -> list[Vm]: ...
        def bring_up(
            self, names: Iterable[str], options: Options, *, skip_conflicts: bool = False
        ) -> Done: ...
        def take_down(self, names: Iterable[str]) -> object: ...


__all__ = [
    "DEFAULT_MMDS_ADDRESS",
    "MTU_RANGE",
    "AttachRequest",
    "FirecrackerFailed",
    "active_vm",
    "attach",
    "check_limits",
    "check_mmds",
    "check_timeout",
    "config_entry",
    "guest_script",
    "iface_id_for",
    "limit",
    "rate_limiters",
    "up_and_attach",
]

MTU_RANGE = (68, 65535)
MMDS_VERSIONS = ("V1", "V2")
TIMEOUT_MAX = 3600.0


# -- checks (before anything is sent or changed) ---------------------------------------------


def check_timeout(timeout: float) -> float:
    """Seconds per API request: more than 0, at most an hour."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise UsageError(f"invalid --timeout {timeout!r}: use a number of seconds > 0")
    if not 0 < timeout <= TIMEOUT_MAX:
        raise UsageError(f"invalid --timeout {timeout:g}: use a number of seconds > 0")
    return float(timeout)


def _check_socket(socket: object) -> str:
    if not isinstance(socket, str | os.PathLike):
        raise UsageError(f"invalid --socket {socket!r}: give the Firecracker API socket's path")
    return os.fspath(socket)


def _check_flag(flag: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"invalid {flag} {value!r}: use True or False")
    return value


def check_mmds(
    mmds: bool, mmds_address: str | None = None, mmds_version: str | None = None
) -> str | None:
    """The checked MMDS address (None: Firecracker's default); an address or a version
    without ``mmds`` is refused."""
    if not mmds:
        for flag, value in (("--mmds-address", mmds_address), ("--mmds-version", mmds_version)):
            if value is not None:
                raise UsageError(f"{flag} needs --mmds")
        return None
    if mmds_version is not None and mmds_version not in MMDS_VERSIONS:
        raise UsageError(f"invalid --mmds-version {mmds_version!r}: use V1 or V2")
    if mmds_address is None:
        return None
    from fireroute.firecracker.client import check_mmds_address

    try:
        return check_mmds_address(mmds_address)
    except ValueError as exc:
        raise UsageError(f"invalid --mmds-address: {exc}") from None


def _off(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == "off"


def rate_limiters(
    *,
    rx_rate: str | int | None = None,
    tx_rate: str | int | None = None,
    burst: str | int | None = None,
    rx_ops: str | int | None = None,
    tx_ops: str | int | None = None,
) -> tuple[dict | None, dict | None]:
    """The guest's receive and transmit limits as Firecracker RateLimiter objects, ``(rx,
    tx)``; None for a side with no limit given. Rates are human units (``"200Mbit"``, an int
    is bytes/s), operations ``"10000/s"``, ``"off"`` removes a limit (in a PATCH).

    ``burst`` (a size, ``"10MB"``) applies to each bandwidth limit given, not to one that is
    ``off``.
    """
    if all(v is None for v in (rx_rate, tx_rate, rx_ops, tx_ops)):
        if burst is not None:
            raise UsageError("--burst needs --rx-rate or --tx-rate")
        return None, None
    from fireroute.firecracker.ratelimit import parse_size, rate_limiter

    if burst is not None:
        if all(v is None or _off(v) for v in (rx_rate, tx_rate)):
            raise UsageError("--burst needs a --rx-rate or --tx-rate other than off")
        try:
            parse_size(burst)
        except ValueError as exc:
            raise UsageError(f"invalid --burst: {exc}") from None
    result = []
    for side, rate, ops in (("rx", rx_rate, rx_ops), ("tx", tx_rate, tx_ops)):
        limiter: dict = {}
        if rate is not None:
            try:
                limiter.update(rate_limiter(bandwidth=rate, burst=None if _off(rate) else burst))
            except ValueError as exc:
                raise UsageError(f"invalid --{side}-rate: {exc}") from None
        if ops is not None:
            try:
                limiter.update(rate_limiter(ops=ops))
            except ValueError as exc:
                raise UsageError(f"invalid --{side}-ops: {exc}") from None
        result.append(limiter or None)
    return result[0], result[1]


def check_limits(rx: dict | None, tx: dict | None) -> None:
    """``limit`` needs something to change."""
    if rx is None and tx is None:
        raise UsageError("nothing to change: give --rx-rate, --tx-rate, --rx-ops or --tx-ops")


def iface_id_for(vm: Vm, iface_id: str | None = None) -> str:
    """The Firecracker iface_id to use: ``iface_id``, or the one recorded by up; checked."""
    from fireroute.firecracker.client import check_resource_id

    try:
        return check_resource_id(vm.options.iface_id if iface_id is None else iface_id)
    except ValueError as exc:
        raise UsageError(f"invalid --iface-id: {exc}") from None


def _require_active(vm: Vm) -> Vm:
    if vm.state != "active":
        raise ConflictError(
            f'vm "{vm.name}" is not up (state {vm.state}); run "fireroute up {vm.name}" first'
        )
    return vm


def active_vm(host: Core, name: str) -> Vm:
    """The VM ``name`` of the state file, which must be up (NotFound, ConflictError)."""
    return _require_active(host.show(name))


class AttachRequest:
    """What :func:`attach` will send, checked on construction (UsageError): the timeout, the
    MTU range, the rate limiters (built here: ``rx``, ``tx``), the MMDS version and address.
    ``mmds_version`` defaults to V2; ``mmds_address`` None is Firecracker's default."""

    __slots__ = (
        "socket",
        "timeout",
        "mtu",
        "boot_source",
        "rx",
        "tx",
        "mmds",
        "mmds_version",
        "mmds_address",
    )

    def __init__(
        self,
        socket: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        mtu: int | None = None,
        boot_source: bool = False,
        rx_rate: str | int | None = None,
        tx_rate: str | int | None = None,
        burst: str | int | None = None,
        rx_ops: str | int | None = None,
        tx_ops: str | int | None = None,
        mmds: bool = False,
        mmds_version: str | None = None,
        mmds_address: str | None = None,
    ) -> None:
        self.socket = _check_socket(socket)
        self.timeout = check_timeout(timeout)
        if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)):
            raise UsageError(f"invalid --mtu {mtu!r}: use {MTU_RANGE[0]}..{MTU_RANGE[1]}")
        if mtu is not None and not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]:
            raise UsageError(f"invalid --mtu {mtu}: use {MTU_RANGE[0]}..{MTU_RANGE[1]}")
        self.mtu = mtu
        self.boot_source = _check_flag("--boot-source", boot_source)
        self.rx, self.tx = rate_limiters(
            rx_rate=rx_rate, tx_rate=tx_rate, burst=burst, rx_ops=rx_ops, tx_ops=tx_ops
        )
        self.mmds = _check_flag("--mmds", mmds)
        self.mmds_address = check_mmds(mmds, mmds_address, mmds_version)
        self.mmds_version = mmds_version or "V2"

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"AttachRequest({fields})"


# -- talking to Firecracker ----------------------------------------------------------------


def _call(what: str, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    """Run one client operation, mapping its errors into fireroute's tree."""
    from fireroute.firecracker.client import FirecrackerApiError, FirecrackerError

    try:
        return fn(*args, **kwargs)
    except FirecrackerApiError as exc:
        sent = ""
        if exc.sent_body is not None:
            import json

            sent = f" (sent {json.dumps(exc.sent_body, separators=(',', ':'))})"
        raise FirecrackerFailed(
            f"{what}: firecracker answered {exc.status} to {exc.method} {exc.path}: "
            f"{exc.fault_message or '(no fault_message)'}{sent}"
        ) from None
    except FirecrackerError as exc:
        raise FirecrackerFailed(f"{what}: {exc}") from None
    except ValueError as exc:  # a value the client refused before sending
        raise UsageError(f"{what}: {exc}") from None


def _vm_config(client, what: str, name: str, req: AttachRequest) -> dict | None:  # noqa: ANN001
    """``GET /vm/config``; from a Firecracker that has none (before 1.0, e.g. 0.24.4) a
    FirecrackerFailed that says what cannot be done there, before anything is sent."""
    from fireroute.firecracker.client import FirecrackerApiError, missing_endpoint

    try:
        return client.get("/vm/config")
    except FirecrackerApiError as exc:
        if not missing_endpoint(exc):
            raise
    version = ".".join(map(str, client.version()))
    if req.boot_source:
        cannot = (
            "--boot-source cannot read its boot source to merge ip= into (put the boot_args "
            f'of "fireroute show {name} --json" in your own PUT /boot-source)'
        )
    else:
        cannot = "--mmds cannot read which interfaces already answer MMDS"
    raise FirecrackerFailed(
        f"{what}: firecracker {version} has no GET /vm/config, so {cannot}; nothing was sent"
    )


def attach(vm: Vm, iface_id: str | None, req: AttachRequest, *, warn: Warn | None = None) -> dict:
    """Configure a not-yet-started Firecracker for ``vm`` (which must be up): the interface
    (``iface_id``; None: the one recorded by up), then, as ``req`` asks, the ``ip=`` boot
    argument and MMDS. Reads (version, boot source) come first, so a VMM that is missing its
    boot source is refused before anything is changed; a failure part way leaves what was
    sent before it (:func:`up_and_attach` undoes the up).

    Returns the report: ``socket``, ``interface`` (the body sent), ``mtu_dropped``,
    ``warnings`` (one line each, e.g. an MTU this Firecracker has no field for; ``warn``, if
    given, is also called with each as it happens), and ``boot_args`` (``{"ip", "changed"}``)
    and ``mmds`` (the body sent) when asked for.
    """
    from fireroute.firecracker import client as fc
    from fireroute.render import firecracker

    _require_active(vm)
    iface_id = iface_id_for(vm, iface_id)
    what = f'cannot attach vm "{vm.name}" to firecracker at {req.socket}'
    client = fc.FirecrackerClient(req.socket, timeout=req.timeout)
    body = firecracker.interface(vm)
    body["iface_id"] = iface_id
    if req.rx:
        body["rx_rate_limiter"] = req.rx
    if req.tx:
        body["tx_rate_limiter"] = req.tx

    current: dict = {}
    if req.boot_source or req.mmds:
        got = _call(what, _vm_config, client, what, vm.name, req)
        current = got if isinstance(got, dict) else {}
        boot = current.get("boot-source")
        if req.boot_source and not (isinstance(boot, dict) and boot.get("kernel_image_path")):
            raise FirecrackerFailed(
                f"{what}: it has no boot source to merge ip= into (PUT /boot-source first, "
                "or leave out --boot-source)"
            )
    ip_arg = guest.boot_arg(vm) if req.boot_source else None
    keeps_other = ip_arg is not None and not _ip_arg_applies(current, body, ip_arg, what)

    sent = _call(what, fc.put_network_interface, client, body, req.mtu)
    warnings: list[str] = []
    report: dict = {"socket": req.socket, "interface": sent, "mtu_dropped": False}
    if req.mtu is not None and "mtu" not in sent:
        version = ".".join(map(str, _call(what, client.version)))
        report["mtu_dropped"] = True
        warnings.append(
            f"firecracker {version} has no interface mtu (needs 1.16.0): "
            f"--mtu {req.mtu} was not sent"
        )
        if warn is not None:
            warn(warnings[-1])
    report["warnings"] = warnings
    if ip_arg is not None and keeps_other:
        report["boot_args"] = {"ip": ip_arg, "changed": False}
        warnings.append(
            f'vm "{vm.name}": boot_args keep the ip= argument of another interface (the '
            f"kernel takes one): configure {vm.options.guest_iface} in the guest with "
            f"`fireroute show {vm.name} --format guest-script`"
        )
        if warn is not None:
            warn(warnings[-1])
    elif ip_arg is not None:
        changed = _call(what, fc.merge_boot_args, client, ip_arg)
        report["boot_args"] = {"ip": ip_arg, "changed": changed}
    if req.mmds:
        before = current.get("mmds-config")
        listed = before.get("network_interfaces") if isinstance(before, dict) else None
        ids = [i for i in listed or [] if i != iface_id]
        report["mmds"] = _call(
            what,
            fc.put_mmds_config,
            client,
            ids + [iface_id],
            req.mmds_version,
            req.mmds_address,
        )
    return report


def _ip_arg_applies(current: dict, body: dict, ip_arg: str, what: str) -> bool:
    """Whether ``ip_arg`` may become the boot source's ``ip=`` argument once the interface
    ``body`` is on the VMM whose configuration is ``current`` (GET /vm/config): False when
    the argument there configures another guest interface (it is kept); ConflictError, before
    anything is sent, when it configures the same guest interface for another interface of
    the VMM (the kernel takes one ip=, and that NIC would boot without an address)."""
    from fireroute.firecracker.configfile import ip_arg_applied, merge_config

    try:
        merged = merge_config(current, body, ip_arg)
    except ValueError as exc:
        raise ConflictError(f"{what}: {exc}") from None
    return ip_arg_applied(merged, ip_arg)


def up_and_attach(
    host: Core,
    name: str,
    options: Options,
    req: AttachRequest,
    skip_conflicts: bool = False,
    *,
    warn: Warn | None = None,
) -> tuple[Vm, dict]:
    """``host.bring_up`` of one VM, then :func:`attach` with the iface_id of its options. A
    failed attach undoes the up (``host.take_down``) when this call brought the VM up, and
    leaves a VM that was already up as it was. Returns the VM and the attach report.

    Errors: the attach's error as a :class:`FirecrackerFailed` whose text ends "vm NAME
    rolled back (its network removed)" (exit code that of the attach's error), or "rolling
    back vm NAME also failed: ..." (exit 1); an interrupt (or a bug) is re-raised as it is,
    after the rollback.
    """
    res = host.bring_up([name], options, skip_conflicts=skip_conflicts)
    vm = res.vms[0]
    try:
        report = attach(vm, vm.options.iface_id, req, warn=warn)
    except BaseException as exc:
        if not res.changed:  # it was up before this call: leave it as it was
            raise
        try:
            host.take_down([vm.name])
        except FirerouteError as undo:
            raise FirecrackerFailed(
                f"{exc}; rolling back vm {vm.name} also failed: {undo}", exit_code=1
            ) from exc
        if isinstance(exc, FirerouteError):
            raise FirecrackerFailed(
                f"{exc}; vm {vm.name} rolled back (its network removed)", exc.exit_code
            ) from None
        raise
    return vm, report


def limit(
    vm: Vm,
    iface_id: str | None,
    socket: str | os.PathLike[str],
    timeout: float,
    rx: dict | None,
    tx: dict | None,
) -> dict:
    """Change a running VM's rate limits (``PATCH /network-interfaces/{iface_id}``; None: the
    iface_id recorded by up). ``rx``/``tx`` come from :func:`rate_limiters`: None leaves that
    side as it is, a bucket ``off`` removes that limit. Returns ``{"socket", "patch"}`` (the
    body sent)."""
    from fireroute.firecracker import client as fc

    timeout = check_timeout(timeout)
    check_limits(rx, tx)
    socket = _check_socket(socket)
    _require_active(vm)
    iface_id = iface_id_for(vm, iface_id)
    client = fc.FirecrackerClient(socket, timeout=timeout)
    what = f'cannot change the rate limits of vm "{vm.name}" at {socket}'
    body = _call(what, fc.patch_network_interface, client, iface_id, rx, tx)
    return {"socket": socket, "patch": body}


def config_entry(
    host: Core,
    name: str,
    iface_id: str | None,
    rx: dict | None,
    tx: dict | None,
    existing: dict | None,
    *,
    source: str | os.PathLike[str] | None = None,
) -> dict:
    """The Firecracker ``--config-file`` document ``existing`` with VM ``name``'s network
    merged in: its interface entry (``iface_id``; None: the one recorded by up; with the
    ``rx``/``tx`` limiters) and its ``ip=`` boot argument. ``existing`` None makes a minimal
    fragment; it is not modified. ``source`` (where ``existing`` was read) only names it in
    the message of a merge that cannot be made (ConflictError: e.g. the tap backs another
    entry)."""
    from fireroute.firecracker.configfile import merge_config
    from fireroute.render import firecracker

    vm = host.show(name)
    entry = firecracker.interface(vm)
    entry["iface_id"] = iface_id_for(vm, iface_id)
    if rx:
        entry["rx_rate_limiter"] = rx
    if tx:
        entry["tx_rate_limiter"] = tx
    try:
        others = [v for v in host.ls() if v.name != vm.name]
        guests = {str(v.guest_ip): v.name for v in others if v.guest_ip is not None}
        taps = {v.vm_tap for v in others}
        return merge_config(existing, entry, guest.boot_arg(vm), taps, guests)
    except ValueError as exc:
        where = f" into {os.fspath(source)}" if source is not None else ""
        raise ConflictError(f'cannot merge vm "{vm.name}"{where}: {exc}') from None


# -- renders that take Firecracker options -------------------------------------------------


def guest_script(vm: Vm, *, mmds: bool = False, mmds_address: str | None = None) -> str:
    """The guest-side script; with ``mmds``, plus the route to the MMDS address (default
    Firecracker's)."""
    address = check_mmds(mmds, mmds_address)
    if not mmds:
        return guest.guest_script(vm)
    return guest.guest_script(vm, mmds_address=address or DEFAULT_MMDS_ADDRESS)
