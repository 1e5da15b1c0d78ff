"""The Firecracker commands: ``attach``, ``limit``, ``config``, ``up --socket`` and the
Firecracker-facing ``show`` formats.

A door: read the parsed arguments, call the core's Firecracker verbs (:class:`fireroute.Host`;
every check, request and rollback is in :mod:`fireroute.firecracker.verbs`), print. Reading
and writing ``--config-file`` documents stays here.
The argparse configuration is in :mod:`fireroute.cli.firecracker_args`.

Start-up matters: nothing from :mod:`fireroute.firecracker` is imported at module level, so
``fireroute up`` without ``--socket`` never loads it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fireroute.errors import UsageError
from fireroute.render.guest import DEFAULT_MMDS_ADDRESS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.api import Host

RATE_FLAGS = ("rx_rate", "tx_rate", "burst", "rx_ops", "tx_ops")


# -- reading the arguments ------------------------------------------------------------------


def _rates(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in RATE_FLAGS}


def _attach_settings(args: argparse.Namespace) -> dict:
    """The settings of an attach (the socket aside), as :meth:`fireroute.Host.attach` takes
    them."""
    return {
        "timeout": args.timeout,
        "mtu": args.mtu,
        "boot_source": args.boot_source,
        "mmds": args.mmds,
        "mmds_version": args.mmds_version,
        "mmds_address": args.mmds_address,
        **_rates(args),
    }


def _host(args: argparse.Namespace) -> Host:
    from fireroute.cli.inputs import _host

    return _host(args)


def _warn(text: str) -> None:
    sys.stderr.write(f"fireroute: {text}\n")


def _shown(report: dict) -> dict:
    """The report as ``--json`` prints it: warnings went to stderr as they happened."""
    return {k: v for k, v in report.items() if k != "warnings"}


# -- printing -------------------------------------------------------------------------------


def _attach_lines(name: str, report: dict) -> str:
    iface = report["interface"]
    extra = f", mtu {iface['mtu']}" if "mtu" in iface else ""
    for side in ("rx", "tx"):
        if f"{side}_rate_limiter" in iface:
            extra += f", {side} limit {_describe(iface[f'{side}_rate_limiter'])}"
    lines = [
        f"vm {name} attached to {report['socket']}: interface {iface['iface_id']} on tap "
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
    report = _host(args).attach(
        args.name, args.socket, iface_id=args.iface_id, warn=_warn, **_attach_settings(args)
    )
    if args.json:
        print(json.dumps({"vm": args.name, **_shown(report)}, indent=2))
    else:
        sys.stdout.write(_attach_lines(args.name, report))
    return 0


def cmd_up_socket(args: argparse.Namespace) -> int:
    """``up VM --socket S``: up, then attach; a failed attach undoes the up."""
    from fireroute.cli.inputs import _fields, _names
    from fireroute.render import record

    if args.dry_run:
        raise UsageError("--socket cannot be combined with --dry-run (plan prints the commands)")
    names = _names(args)
    if len(names) != 1:
        raise UsageError("--socket attaches one vm: name exactly one (no --count)")
    vm, report = _host(args).up_attached(
        names[0],
        args.socket,
        attach=_attach_settings(args),
        skip_conflicts=args.skip_conflicts,
        warn=_warn,
        **_fields(args),
    )
    if args.json:
        print(json.dumps({**record.as_dict(vm.record), "attach": _shown(report)}, indent=2))
    else:
        sys.stdout.write(record.summary(vm.record) + _attach_lines(vm.name, report))
    return 0


def cmd_limit(args: argparse.Namespace) -> int:
    report = _host(args).limit(
        args.name, args.socket, iface_id=args.iface_id, timeout=args.timeout, **_rates(args)
    )
    if args.json:
        print(json.dumps({"vm": args.name, **report}, indent=2))
        return 0
    body = report["patch"]
    parts = [
        f"{side} {_describe(body[f'{side}_rate_limiter'])}"
        for side in ("rx", "tx")
        if f"{side}_rate_limiter" in body
    ]
    print(f"vm {args.name}: interface {body['iface_id']} limits updated: {', '.join(parts)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from fireroute.firecracker import verbs

    verbs.rate_limiters(**_rates(args))
    host = _host(args)
    # the VM and --iface-id first: a bad name is reported before a bad (or missing) file
    verbs.iface_id_for(host.show(args.name), args.iface_id)
    existing = _read_config(args.merge) if args.merge is not None else None
    merged = host.config(
        args.name, existing, iface_id=args.iface_id, source=args.merge, **_rates(args)
    )
    text = json.dumps(merged, indent=2) + "\n"
    _say_if_ip_arg_kept(host, args.name, merged)
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_atomically(args.output, text)
    return 0


def _say_if_ip_arg_kept(host: Host, name: str, merged: dict) -> None:
    """A merge that kept another interface's ip= argument says so: this VM's interface is
    then configured by its guest script, not by the kernel."""
    from fireroute.firecracker.configfile import ip_arg_applied
    from fireroute.render import guest

    vm = host.show(name)
    ip_arg = guest.boot_arg(vm)
    if not ip_arg_applied(merged, ip_arg):
        sys.stderr.write(
            f'fireroute: vm "{vm.name}": boot_args keep the ip= argument of another '
            f"interface (the kernel takes one): configure {vm.options.guest_iface} in the guest "
            f"with `fireroute show {vm.name} --format guest-script`\n"
        )


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
    from fireroute.firecracker.verbs import guest_script

    return guest_script(vm, mmds=args.mmds, mmds_address=args.mmds_address)


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
