"""The Firecracker commands: ``attach``, ``limit``, ``config``, ``up --socket`` and the
Firecracker-facing ``show`` formats.

Thin adapter over :mod:`fireroute.firecracker` (client, rate limits, config merging) and the
public :class:`fireroute.manager.Manager` API. Every value is checked before the first request
is sent; Firecracker's own errors are passed on verbatim (its ``fault_message``) together with
what was being sent, as one :class:`FirecrackerFailed` line.

Start-up matters: nothing from :mod:`fireroute.firecracker` is imported at module level, so
``fireroute up`` without ``--socket`` never loads it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fireroute.errors import ConflictError, FirerouteError, UsageError

MTU_RANGE = (68, 65535)
DEFAULT_MMDS_ADDRESS = "169.254.169.254"
RATE_FLAGS = ("rx_rate", "tx_rate", "rx_ops", "tx_ops")


class FirecrackerFailed(FirerouteError):
    """Firecracker refused a request, or could not be reached / understood."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- argument configuration -----------------------------------------------------------------


def _rate_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rate limits (human units; 'off' removes a limit)")
    g.add_argument("--rx-rate", metavar="RATE", help="guest receive bandwidth, e.g. 200Mbit")
    g.add_argument("--tx-rate", metavar="RATE", help="guest transmit bandwidth, e.g. 100Mbit")
    g.add_argument(
        "--burst", metavar="SIZE", help="one-time burst of each bandwidth limit, e.g. 10MB"
    )
    g.add_argument("--rx-ops", metavar="OPS", help="guest receive packets per second, e.g. 10000/s")
    g.add_argument("--tx-ops", metavar="OPS", help="guest transmit packets per second")


def _api_options(p: argparse.ArgumentParser, socket_required: bool) -> None:
    p.add_argument(
        "--socket",
        required=socket_required,
        help="Firecracker API socket"
        + ("" if socket_required else ": also attach the VM to this (not yet started) VMM"),
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per API request (default 5)")


def _attach_options(p: argparse.ArgumentParser) -> None:
    """Options of attach that ``up --socket`` shares."""
    p.add_argument("--mtu", type=int, help="guest MTU (sent only to Firecracker >= 1.16.0)")
    p.add_argument(
        "--boot-source",
        action="store_true",
        help="merge the ip= argument into the configured boot source's boot_args",
    )
    _rate_options(p)
    g = p.add_argument_group("MMDS")
    g.add_argument("--mmds", action="store_true", help="serve MMDS on this interface")
    g.add_argument("--mmds-version", choices=("V1", "V2"), help="MMDS version (default V2)")
    g.add_argument("--mmds-address", help=f"MMDS IPv4 address (default {DEFAULT_MMDS_ADDRESS})")


def configure_up(p: argparse.ArgumentParser) -> None:
    """``up --socket ...``: bring the network up and attach it in one step."""
    _api_options(p, socket_required=False)
    _attach_options(p)


def configure_show(p: argparse.ArgumentParser) -> None:
    """Extra ``show`` options: the MMDS route in ``--format guest-script``."""
    p.add_argument(
        "--mmds", action="store_true", help="guest-script: add the route to the MMDS address"
    )
    p.add_argument(
        "--mmds-address", help=f"guest-script: MMDS address (default {DEFAULT_MMDS_ADDRESS})"
    )


def _common(p: argparse.ArgumentParser) -> None:
    from fireroute.cli.parser import common

    common(p)


def _vm_on_socket(p: argparse.ArgumentParser) -> None:
    """A VM of the state file and the Firecracker API socket it is handed to."""
    p.add_argument("name", metavar="VM")
    _api_options(p, socket_required=True)
    p.add_argument("--iface-id", help="Firecracker iface_id (default: the one recorded by up)")


def _cfg_attach(p: argparse.ArgumentParser) -> None:
    _vm_on_socket(p)
    _attach_options(p)
    _common(p)


def _cfg_limit(p: argparse.ArgumentParser) -> None:
    _vm_on_socket(p)
    _rate_options(p)
    _common(p)


def _cfg_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="VM")
    p.add_argument(
        "--merge",
        type=Path,
        metavar="FILE",
        help="Firecracker --config-file to merge into (a missing file starts from nothing)",
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (default stdout)")
    p.add_argument("--iface-id", help="Firecracker iface_id (default: the one recorded by up)")
    _rate_options(p)
    p.add_argument("--state", type=Path, default=None, help="state file")


COMMANDS = {
    "attach": ("hand a VM's tap to a Firecracker that has not started yet", _cfg_attach),
    "limit": ("change a running VM's rate limits (PATCH)", _cfg_limit),
    "config": ("merge a VM's network into a Firecracker --config-file", _cfg_config),
}


# -- validation (before anything is sent or changed) ---------------------------------------


class Request:
    """What attach will send, checked: limiters built, MTU/MMDS values validated."""

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

    def __init__(self, args: argparse.Namespace) -> None:
        self.socket = args.socket
        self.timeout = _timeout(args)
        self.mtu = args.mtu
        if self.mtu is not None and not MTU_RANGE[0] <= self.mtu <= MTU_RANGE[1]:
            raise UsageError(f"invalid --mtu {self.mtu}: use {MTU_RANGE[0]}..{MTU_RANGE[1]}")
        self.boot_source = args.boot_source
        self.rx, self.tx = limiters(args)
        self.mmds = args.mmds
        self.mmds_version = args.mmds_version or "V2"
        self.mmds_address = mmds_address(args)


def _timeout(args: argparse.Namespace) -> float:
    if not 0 < args.timeout <= 3600:
        raise UsageError(f"invalid --timeout {args.timeout:g}: use a number of seconds > 0")
    return args.timeout


def mmds_address(args: argparse.Namespace) -> str | None:
    """The checked ``--mmds-address`` (None: Firecracker's default); needs ``--mmds``."""
    version = getattr(args, "mmds_version", None)
    if not args.mmds:
        for flag, value in (("--mmds-address", args.mmds_address), ("--mmds-version", version)):
            if value is not None:
                raise UsageError(f"{flag} needs --mmds")
        return None
    if args.mmds_address is None:
        return None
    from fireroute.firecracker.client import check_mmds_address

    try:
        return check_mmds_address(args.mmds_address)
    except ValueError as exc:
        raise UsageError(f"invalid --mmds-address: {exc}") from None


def limiters(args: argparse.Namespace) -> tuple[dict | None, dict | None]:
    """``--rx-*``/``--tx-*``/``--burst`` as Firecracker RateLimiter objects (None: not given).

    ``--burst`` applies to each bandwidth limit given (not to one that is ``off``).
    """
    if not any(getattr(args, f) is not None for f in RATE_FLAGS):
        if args.burst is not None:
            raise UsageError("--burst needs --rx-rate or --tx-rate")
        return None, None
    from fireroute.firecracker.ratelimit import parse_size, rate_limiter

    def off(value: str | None) -> bool:
        return value is not None and value.strip().lower() == "off"

    if args.burst is not None:
        if all(v is None or off(v) for v in (args.rx_rate, args.tx_rate)):
            raise UsageError("--burst needs a --rx-rate or --tx-rate other than off")
        try:
            parse_size(args.burst)
        except ValueError as exc:
            raise UsageError(f"invalid --burst: {exc}") from None
    result = []
    for side in ("rx", "tx"):
        rate, ops = getattr(args, f"{side}_rate"), getattr(args, f"{side}_ops")
        limiter: dict = {}
        if rate is not None:
            burst = None if off(rate) else args.burst
            try:
                limiter.update(rate_limiter(bandwidth=rate, burst=burst))
            except ValueError as exc:
                raise UsageError(f"invalid --{side}-rate: {exc}") from None
        if ops is not None:
            try:
                limiter.update(rate_limiter(ops=ops))
            except ValueError as exc:
                raise UsageError(f"invalid --{side}-ops: {exc}") from None
        result.append(limiter or None)
    return result[0], result[1]


def _iface_id(args: argparse.Namespace, vm) -> str:  # noqa: ANN001
    iface_id = args.iface_id or vm.options.iface_id
    from fireroute.firecracker.client import check_resource_id

    try:
        return check_resource_id(iface_id)
    except ValueError as exc:
        raise UsageError(f"invalid --iface-id: {exc}") from None


def _active_vm(args: argparse.Namespace):  # noqa: ANN202
    from fireroute.cli.inputs import _state
    from fireroute.manager import Manager

    vm = Manager(_state(args)).show(args.name)
    if vm.state != "active":
        raise ConflictError(
            f'vm "{vm.name}" is not up (state {vm.state}); run "fireroute up {vm.name}" first'
        )
    return vm


# -- talking to Firecracker ----------------------------------------------------------------


def _call(what: str, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    """Run one client operation, mapping its errors into fireroute's tree."""
    from fireroute.firecracker.client import FirecrackerApiError, FirecrackerError

    try:
        return fn(*args, **kwargs)
    except FirecrackerApiError as exc:
        sent = ""
        if exc.sent_body is not None:
            sent = f" (sent {json.dumps(exc.sent_body, separators=(',', ':'))})"
        raise FirecrackerFailed(
            f"{what}: firecracker answered {exc.status} to {exc.method} {exc.path}: "
            f"{exc.fault_message or '(no fault_message)'}{sent}"
        ) from None
    except FirecrackerError as exc:
        raise FirecrackerFailed(f"{what}: {exc}") from None
    except ValueError as exc:  # a value the client refused before sending
        raise UsageError(f"{what}: {exc}") from None


def attach(vm, iface_id: str, req: Request) -> dict:  # noqa: ANN001
    """Configure a not-yet-started Firecracker: the interface, then (optionally) the ``ip=``
    boot argument and MMDS. Reads (version, boot source) come first, so a VMM that is missing
    its boot source is refused before anything is changed. Returns what was done."""
    from fireroute.firecracker import client as fc
    from fireroute.render import firecracker, guest

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
        current = _call(what, client.get, "/vm/config") or {}
        boot = current.get("boot-source")
        if req.boot_source and not (isinstance(boot, dict) and boot.get("kernel_image_path")):
            raise FirecrackerFailed(
                f"{what}: it has no boot source to merge ip= into (PUT /boot-source first, "
                "or leave out --boot-source)"
            )

    sent = _call(what, fc.put_network_interface, client, body, req.mtu)
    report: dict = {"socket": req.socket, "interface": sent, "mtu_dropped": False}
    if req.mtu is not None and "mtu" not in sent:
        version = ".".join(map(str, client.version()))
        report["mtu_dropped"] = True
        sys.stderr.write(
            f"fireroute: firecracker {version} has no interface mtu (needs 1.16.0): "
            f"--mtu {req.mtu} was not sent\n"
        )
    if req.boot_source:
        ip_arg = guest.boot_arg(vm)
        changed = _call(what, fc.merge_boot_args, client, ip_arg)
        report["boot_args"] = {"ip": ip_arg, "changed": changed}
    if req.mmds:
        before = current.get("mmds-config") or {}
        ids = [i for i in before.get("network_interfaces") or [] if i != iface_id]
        report["mmds"] = _call(
            what,
            fc.put_mmds_config,
            client,
            ids + [iface_id],
            req.mmds_version,
            req.mmds_address,
        )
    return report


def _attach_lines(vm, report: dict) -> str:  # noqa: ANN001
    iface = report["interface"]
    extra = f", mtu {iface['mtu']}" if "mtu" in iface else ""
    for side in ("rx", "tx"):
        if f"{side}_rate_limiter" in iface:
            extra += f", {side} limit {_describe(iface[f'{side}_rate_limiter'])}"
    lines = [
        f"vm {vm.name} attached to {report['socket']}: interface {iface['iface_id']} on tap "
        f"{iface['host_dev_name']}, mac {iface['guest_mac']}{extra}"
    ]
    if "boot_args" in report:
        b = report["boot_args"]
        lines.append(f"  boot args:  {b['ip']}" + ("" if b["changed"] else " (already set)"))
    if "mmds" in report:
        m = report["mmds"]
        addr = m.get("ipv4_address", DEFAULT_MMDS_ADDRESS)
        ids = ", ".join(m["network_interfaces"])
        lines.append(f"  mmds:       {m['version']} at {addr} on {ids}")
    return "\n".join(lines) + "\n"


def _describe(limiter: dict) -> str:
    """A RateLimiter in words: ``200Mbit/s + 10000 ops/s``, ``bandwidth off``."""
    parts = []
    for name in ("bandwidth", "ops"):
        b = limiter.get(name)
        if b is None:
            continue
        if b.get("size", 0) == 0:
            parts.append(f"{name} off")
        elif name == "ops":
            parts.append(f"{b['size'] * 1000 / b['refill_time']:g} ops/s")
        else:
            parts.append(f"{b['size'] * 8000 / b['refill_time'] / 1e6:g}Mbit/s")
    return " + ".join(parts) or "none"


# -- handlers -------------------------------------------------------------------------------


def cmd_attach(args: argparse.Namespace) -> int:
    req = Request(args)
    vm = _active_vm(args)
    iface_id = _iface_id(args, vm)
    report = attach(vm, iface_id, req)
    if args.json:
        print(json.dumps({"vm": vm.name, **report}, indent=2))
    else:
        sys.stdout.write(_attach_lines(vm, report))
    return 0


def cmd_up_socket(args: argparse.Namespace) -> int:
    """``up VM --socket S``: ``Manager.up``, then attach; a failed attach undoes the up."""
    from fireroute.cli.inputs import _names, _options, _state
    from fireroute.manager import Manager
    from fireroute.render import record

    if args.dry_run:
        raise UsageError("--socket cannot be combined with --dry-run (plan prints the commands)")
    names = _names(args)
    if len(names) != 1:
        raise UsageError("--socket attaches one vm: name exactly one (no --count)")
    req = Request(args)
    options = _options(args)
    manager = Manager(_state(args))
    res = manager.up(names, options, skip_conflicts=args.skip_conflicts)
    vm = res.vms[0]
    try:
        report = attach(vm, vm.options.iface_id, req)
    except BaseException as exc:
        if not res.changed:  # it was up before this call: leave it as it was
            raise
        try:
            manager.down([vm.name])
        except FirerouteError as undo:
            raise FirecrackerFailed(
                f"{exc}; rolling back vm {vm.name} also failed: {undo}", exit_code=1
            ) from exc
        if isinstance(exc, FirerouteError):
            raise FirecrackerFailed(
                f"{exc}; vm {vm.name} rolled back (its network removed)", exc.exit_code
            ) from None
        raise
    if args.json:
        print(json.dumps({**record.as_dict(vm), "attach": report}, indent=2))
    else:
        sys.stdout.write(record.summary(vm) + _attach_lines(vm, report))
    return 0


def cmd_limit(args: argparse.Namespace) -> int:
    timeout = _timeout(args)
    rx, tx = limiters(args)
    if rx is None and tx is None:
        raise UsageError("nothing to change: give --rx-rate, --tx-rate, --rx-ops or --tx-ops")
    vm = _active_vm(args)
    iface_id = _iface_id(args, vm)
    from fireroute.firecracker import client as fc

    client = fc.FirecrackerClient(args.socket, timeout=timeout)
    what = f'cannot change the rate limits of vm "{vm.name}" at {args.socket}'
    body = _call(what, fc.patch_network_interface, client, iface_id, rx, tx)
    if args.json:
        print(json.dumps({"vm": vm.name, "socket": args.socket, "patch": body}, indent=2))
        return 0
    parts = [
        f"{side} {_describe(body[f'{side}_rate_limiter'])}"
        for side in ("rx", "tx")
        if f"{side}_rate_limiter" in body
    ]
    print(f"vm {vm.name}: interface {iface_id} limits updated: {', '.join(parts)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from fireroute.cli.inputs import _state
    from fireroute.firecracker.configfile import merge_config
    from fireroute.manager import Manager
    from fireroute.render import firecracker, guest

    rx, tx = limiters(args)
    manager = Manager(_state(args))
    vm = manager.show(args.name)
    entry = firecracker.interface(vm)
    entry["iface_id"] = _iface_id(args, vm)
    if rx:
        entry["rx_rate_limiter"] = rx
    if tx:
        entry["tx_rate_limiter"] = tx
    existing = _read_config(args.merge) if args.merge is not None else None
    try:
        others = {v.vm_tap for v in manager.ls() if v.name != vm.name}
        merged = merge_config(existing, entry, guest.boot_arg(vm), others)
    except ValueError as exc:
        where = f" into {args.merge}" if args.merge is not None else ""
        raise ConflictError(f'cannot merge vm "{vm.name}"{where}: {exc}') from None
    text = json.dumps(merged, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_atomically(args.output, text)
    return 0


def _read_config(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        sys.stderr.write(f"fireroute: {path} does not exist: writing a minimal fragment\n")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot read Firecracker config {path}: {reason}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"invalid JSON in Firecracker config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"invalid Firecracker config {path}: expected a JSON object")
    return data


def _write_atomically(path: Path, text: str) -> None:
    """Write next to ``path`` and rename over it (keeps the old file's mode)."""
    tmp = path.with_name(f".{path.name}.fireroute-{os.getpid()}")
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o644
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- show formats ---------------------------------------------------------------------------


def check_show(args: argparse.Namespace, fmt: str) -> None:
    if fmt != "guest-script" and (args.mmds or args.mmds_address is not None):
        raise UsageError("--mmds and --mmds-address apply to --format guest-script only")


def show_guest_script(vm, args: argparse.Namespace) -> str:  # noqa: ANN001
    from fireroute.render import guest

    if not args.mmds:
        mmds_address(args)  # --mmds-address without --mmds is an error
        return guest.guest_script(vm)
    return guest.guest_script(vm, mmds_address=mmds_address(args) or DEFAULT_MMDS_ADDRESS)


def show_snapshot_overrides(vm) -> str:  # noqa: ANN001
    from fireroute.render import firecracker

    return json.dumps(firecracker.snapshot_overrides(vm), indent=2) + "\n"


def show_jailer(vm) -> str:  # noqa: ANN001
    """The arguments on stdout (ready for ``$(...)``), the explanation on stderr."""
    from fireroute.render import firecracker

    argv, notes = firecracker.jailer_args(vm)
    for note in notes:
        sys.stderr.write(f"# {note}\n")
    return " ".join(argv) + "\n" if argv else ""


HANDLERS = {"attach": cmd_attach, "limit": cmd_limit, "config": cmd_config}
