"""``fireroute`` command line."""

from __future__ import annotations

import os
import sys
import time

from fireroute import __version__, jsontext
from fireroute.cli.inputs import _host, _names, _options, _progress, _state
from fireroute.errors import FirerouteError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace

    from fireroute.api import Host
    from fireroute.cli.args import Args
    from fireroute.handoff import DaemonHost

SERVED = ("up", "down", "show", "ls")
"""the commands handed to the daemon with --daemon or $FIREROUTE_SOCKET (a dry run and every
other command run here)"""


def _door(args: Namespace | Args) -> Host | DaemonHost:
    """Where a command's verbs run: the daemon the command line names (handoff.py), or
    here, on the state file."""
    asked = getattr(args, "daemon", None) or os.environ.get("FIREROUTE_SOCKET")
    if asked and args.cmd in SERVED and not getattr(args, "dry_run", False):
        from fireroute.handoff import DaemonHost, socket_of

        path = socket_of(args)
        if path is not None:
            return DaemonHost(path, _given(args))
    return _host(args)


def _given(args: Namespace | Args) -> dict[str, object]:
    """The options of ``up`` a command line gave (those not at their default), by the names
    of the daemon's ``PUT /vms/{name}`` body (none for another command)."""
    from fireroute.cli.args import UP

    out: dict[str, object] = {}
    for opt in UP if args.cmd == "up" else ():
        value = getattr(args, opt.dest, None)
        if opt.dest in ("count", "prefix", "skip_conflicts") or value == opt.initial():
            continue
        out["allow_host_ports" if opt.dest == "allow_host_port" else opt.dest] = value
    return out


def cmd_up(args: Namespace | Args, dry_run: bool) -> int:
    from fireroute.render import record

    names = _names(args)
    t0 = time.monotonic()
    progress = _progress(len(names) > 1 and sys.stderr.isatty() and not dry_run)
    res = _door(args).bring_up(
        names,
        _options(args),
        skip_conflicts=args.skip_conflicts,
        dry_run=dry_run,
        progress=progress,
    )
    if progress:
        sys.stderr.write("\r\x1b[K")
    for warning in res.warnings:
        sys.stderr.write(f"fireroute: warning: {warning}\n")
    if dry_run:
        sys.stdout.write(
            res.commands
            if not args.json
            else jsontext.dumps(
                {"commands": res.commands, "vms": [record.as_dict(v) for v in res.vms]},
                indent=2,
            )
            + "\n"
        )
        return 0
    if args.json:
        print(jsontext.dumps([record.as_dict(v) for v in res.vms], indent=2))
    elif len(res.vms) > 3:
        first, last = res.vms[0], res.vms[-1]
        print(
            f"{len(res.vms)} vms up ({first.name} .. {last.name}, guests {first.guest_ip} .. "
            f"{last.guest_ip}) in {time.monotonic() - t0:.2f}s"
        )
    else:
        for vm in res.vms:
            sys.stdout.write(record.summary(vm))
    return 0


def cmd_down(args: Namespace | Args) -> int:
    if not args.names and not args.all:
        raise UsageError("name at least one vm (or use --all)")
    if args.names and args.all:
        raise UsageError("give either vm names or --all, not both")
    host = _door(args)
    final: list[dict[str, object]] = []
    if args.json and not args.dry_run:  # the VMs' last figures, read before they go
        known = {v.name for v in host.ls()}
        wanted = sorted(known) if args.all else [n for n in args.names if n in known]
        final = host.stats(*wanted) if wanted else []
    done = host.take_down(args.names, everything=args.all, dry_run=args.dry_run)
    if args.dry_run:
        sys.stdout.write(done.commands)
        return 0
    found = {v.name for v in done.vms}
    if args.json:
        out = {"removed": sorted(found), "absent": [n for n in args.names if n not in found]}
        out["stats"] = [r for r in final if r["name"] in found]
        print(jsontext.dumps(out))
        return 0
    for n in args.names:
        print(f"vm {n} down" if n in found else f"vm {n} was not up (nothing to do)")
    if args.all:
        print(f"{len(found)} vm(s) down")
    return 0


def cmd_ls(args: Namespace) -> int:
    from fireroute.render import record

    vms = _door(args).ls()
    if args.json:
        print(jsontext.dumps([record.as_dict(v) for v in vms], indent=2))
        return 0
    head = ("NAME", "STATE", "MODE", "BACKEND", "DEVICE", "GATEWAY", "GUEST IP", "MAC", "UPLINK")
    attached = any(v.mode == "cni" for v in vms)  # CNI attachments: whose, and where
    rows = [head + (("CONTAINER", "IFNAME", "NETNS") if attached else ())]
    rows += [
        (
            v.name,
            v.state,
            v.mode,
            v.backend,
            v.tap,
            f"{v.tap_ip}/{v.prefix}" if v.tap_ip else "-",
            str(v.guest_ip or "dhcp"),
            v.mac,
            v.uplink,
        )
        + (
            (str(v.options.container or "-"), str(v.options.ifname or "-"), str(v.netns or "-"))
            if attached
            else ()
        )
        for v in vms
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_show(args: Namespace) -> int:
    from fireroute.cli import firecracker_cmds as fcc
    from fireroute.render import firecracker, guest, record

    fmt = "json" if args.json else args.format
    fcc.check_show(args, fmt)
    vm = _door(args).show(args.name)
    out = {
        "text": lambda: record.summary(vm),
        "json": lambda: jsontext.dumps(record.as_dict(vm), indent=2) + "\n",
        "boot-args": lambda: guest.boot_arg(vm) + "\n",
        "guest-script": lambda: fcc.show_guest_script(vm, args),
        "firecracker-api": lambda: firecracker.api_call(vm, args.socket),
        "firecracker-config": lambda: (
            jsontext.dumps(firecracker.config_fragment(vm), indent=2) + "\n"
        ),
        "firectl": lambda: firecracker.firectl_flag(vm) + "\n",
        "snapshot-overrides": lambda: fcc.show_snapshot_overrides(vm),
        "jailer": lambda: fcc.show_jailer(vm),
    }[fmt]()
    sys.stdout.write(out)
    return 0


def cmd_policy(args: Namespace) -> int:
    from fireroute.render import record

    changes: dict[str, object] = {}
    if args.reset:
        changes = {"egress": "internet", "allow_out": [], "deny_out": []}
    for key in ("egress", "allow_out", "deny_out"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if not changes:
        raise UsageError("nothing to change: give --egress, --allow-out, --deny-out or --reset")
    # the interval elements in-process: nft itself reads every element of an interval set
    # first, so its cost grows with the VM count (bench/ports.py)
    with _host(args, in_process=True) as host:
        vm = host.set_policy(args.name, changes, dry_run=args.dry_run)
    o = vm.options
    if args.json:
        print(jsontext.dumps(record.as_dict(vm), indent=2))
    else:
        allow = ",".join(map(str, o.allow_out)) or "-"
        deny = ",".join(map(str, o.deny_out)) or "-"
        verb = "would have" if args.dry_run else "has"
        print(f"vm {vm.name} {verb} egress {o.egress}, allow-out {allow}, deny-out {deny}")
    return 0


def cmd_publish(args: Namespace) -> int:
    from fireroute.render import record

    add, remove = (args.specs, []) if args.cmd == "publish" else ([], args.specs)
    done = _host(args).set_ports(args.name, add, remove, dry_run=args.dry_run)
    vm = done.vms[0]
    if args.dry_run:
        sys.stdout.write(done.commands)
    elif args.json:
        print(jsontext.dumps(record.as_dict(vm), indent=2))
    else:
        ports = ", ".join(str(p) for p in vm.options.publish) or "no ports"
        print(f"vm {vm.name} publishes {ports}")
    return 0


def cmd_stats(args: Namespace) -> int:
    from fireroute import stats

    rows = _host(args).stats(*args.names)
    if args.prometheus:
        sys.stdout.write(stats.prometheus(rows))
    elif args.json:
        print(jsontext.dumps(rows, indent=2))
    else:
        print("NAME  TX BYTES  TX PACKETS  RX BYTES  RX PACKETS")
        for r in rows:
            figures = [r[k] for k in stats.KEYS]
            shown = "  ".join(str(x) for x in figures) if r["counted"] else "not counted"
            print(f"{r['name']}  {shown}")
    return 0


def cmd_teardown(args: Namespace) -> int:
    done = _host(args).sweep(dry_run=args.dry_run)
    if args.dry_run:
        sys.stdout.write(done.commands)
    elif args.json:
        print(jsontext.dumps({"removed": [v.name for v in done.vms]}))
    else:
        print(f"teardown: {len(done.vms)} vm(s) down, fireroute's tables and rules removed")
    return 0


def cmd_demo(args: Namespace) -> int:
    from fireroute.lab.demo import run_demo

    return run_demo(vms=args.vms, backend=args.backend, boot=not args.no_boot)


def cmd_ra(args: Namespace) -> int:
    """The RA responder in the foreground, until SIGTERM or SIGINT (a clean exit)."""
    from fireroute.advertise import serve

    try:
        serve(_state(args), verbose=args.verbose, dns=args.dns6)
    except KeyboardInterrupt:
        return 0
    return 0


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # the C module: signal.py imports enum, ~1 ms of start-up (typeshed has no stub for it)
    import _signal  # type: ignore[import-not-found]

    for sig in (_signal.SIGTERM, _signal.SIGHUP):  # a killed or hung-up run unwinds like ^C
        if _signal.getsignal(sig) == _signal.SIG_DFL:
            _signal.signal(sig, _interrupted)
    try:
        argv = sys.argv[1:] if argv is None else argv
        if argv == ["--version"]:  # asked before every per-VM call by some wrappers: no parser
            print(f"fireroute {__version__}")
            return 0
        from fireroute.cli.args import parse_hot

        hot = parse_hot(argv)
        if hot is not None:  # plain ``up`` or ``down``
            return cmd_up(hot, dry_run=hot.dry_run) if hot.cmd == "up" else cmd_down(hot)
        from fireroute.cli import parser

        args = parser.parse(argv)
        if args.cmd is None:
            parser.build_parser().print_help()
            return 2
        if args.cmd == "up" and args.socket is not None:
            from fireroute.cli.firecracker_cmds import cmd_up_socket

            return cmd_up_socket(args)
        if args.cmd in ("attach", "limit", "config"):
            from fireroute.cli.firecracker_cmds import HANDLERS

            return HANDLERS[args.cmd](args)
        if args.cmd in ("up", "plan"):
            return cmd_up(args, dry_run=args.cmd == "plan" or getattr(args, "dry_run", False))
        if args.cmd in ("check", "gc", "restore", "doctor"):
            from fireroute.cli import repair_cmds

            return getattr(repair_cmds, f"cmd_{args.cmd}")(args)
        return {
            "down": cmd_down,
            "ls": cmd_ls,
            "show": cmd_show,
            "teardown": cmd_teardown,
            "stats": cmd_stats,
            "policy": cmd_policy,
            "publish": cmd_publish,
            "unpublish": cmd_publish,
            "demo": cmd_demo,
            "ra": cmd_ra,
        }[args.cmd](args)
    except FirerouteError as exc:
        sys.stderr.write("fireroute: " + str(exc).replace("\n", "\\n") + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("fireroute: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("FIREROUTE_DEBUG"):
            raise
        sys.stderr.write(
            f"fireroute: internal error: {type(exc).__name__}: {exc} "
            "(set FIREROUTE_DEBUG=1 for the traceback)\n"
        )
        return 70
