"""``fireroute`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from fireroute import __version__
from fireroute.errors import FirerouteError, UsageError

FORMATS = (
    "text",
    "json",
    "boot-args",
    "guest-script",
    "firecracker-api",
    "firecracker-config",
    "firectl",
    "snapshot-overrides",
    "jailer",
)


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter with the width given: without it argparse imports shutil on
    every parser (for the terminal size), which the per-VM command pays for nothing."""
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns - 2
    except OSError:
        width = 98
    return argparse.HelpFormatter(prog, width=max(width, 40))


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise UsageError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        help="state file (default $FIREROUTE_STATE or /var/lib/fireroute/state.db)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _up_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="VM", help="vm name(s)")
    p.add_argument("--count", type=int, help="bring up VMs PREFIX0 .. PREFIX{N-1} in one batch")
    p.add_argument("--prefix", default="vm-", help="name prefix for --count (default vm-)")
    p.add_argument("--backend", default="nft", help="nft (default) or iptables")
    p.add_argument("--uplink", help="internet-facing interface (default: the default route's)")
    p.add_argument(
        "--pool",
        help="address pool (default 172.16.0.0/16; clone mode: the veth "
        "links' pool, default 10.200.0.0/16)",
    )
    p.add_argument("--block-size", default="30", help="block prefix length, 24..30 (default 30)")
    p.add_argument("--table", default="firecracker", help="nftables table (default firecracker)")
    p.add_argument("--tap", help="tap name (default fr-<vm>, at most 15 bytes)")
    p.add_argument("--mac", help="guest MAC (default 06:00 + the guest IPv4's octets)")
    p.add_argument("--dns", action="append", default=[], help="DNS server for the guest")
    p.add_argument("--owner", help="UID[:GID] allowed to open the tap (jailed Firecracker)")
    p.add_argument("--guest-iface", default="eth0", help="interface name in the guest")
    p.add_argument("--iface-id", default="eth0", help="Firecracker iface_id (default eth0)")
    p.add_argument("--mode", default="nat", help="nat (default), bridge or clone")
    p.add_argument(
        "--fix-forward-policy",
        action="store_true",
        help="add tagged ACCEPTs for this VM to iptables-nft's FORWARD chain (for hosts where "
        "Docker set its policy to DROP; see fireroute doctor)",
    )
    p.add_argument(
        "--allow-peers",
        action="store_true",
        help="let this guest talk to other guests that allow it too",
    )
    p.add_argument(
        "--allow-metadata",
        action="store_true",
        help="let this guest reach 169.254.169.254 (cloud metadata)",
    )
    p.add_argument(
        "--allow-host-port",
        action="append",
        default=[],
        metavar="PORT/PROTO",
        help="let this guest reach the host on PORT/tcp or PORT/udp (repeatable)",
    )
    p.add_argument("--bridge", help="bridge mode: the bridge (default br0; created if missing)")
    p.add_argument(
        "--bridge-address",
        help="bridge mode: address for a bridge we create, "
        "and the guests' gateway (e.g. 192.168.1.7/24)",
    )
    p.add_argument("--guest-ip", help="bridge/clone mode: the guest's address with prefix")
    p.add_argument(
        "--range", dest="addr_range", help="bridge mode: allocate guest addresses from FIRST-LAST"
    )
    p.add_argument("--dhcp", action="store_true", help="bridge mode: the guest uses DHCP")
    p.add_argument("--gateway", help="bridge mode: the LAN's router")
    p.add_argument(
        "--masquerade", action="store_true", help="bridge mode: NAT the guests out of the uplink"
    )
    p.add_argument(
        "--clone-address",
        help="clone mode: address the host reaches the guest "
        "at (default auto: the clone's veth address)",
    )
    p.add_argument(
        "--skip-conflicts",
        action="store_true",
        help="skip blocks that overlap host routes instead of failing",
    )


def _cfg_up(p: argparse.ArgumentParser) -> None:
    _up_options(p)
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="print the commands, change nothing")
    from fireroute.cli.firecracker_cmds import configure_up

    configure_up(p)


def _cfg_plan(p: argparse.ArgumentParser) -> None:
    _up_options(p)
    _common(p)


def _cfg_down(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="VM")
    p.add_argument("--all", action="store_true", help="every VM in the state file")
    p.add_argument("--dry-run", action="store_true", help="print the commands, change nothing")
    _common(p)


def _cfg_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="VM")
    p.add_argument("--format", default="text", choices=FORMATS)
    p.add_argument(
        "--socket",
        default="/tmp/firecracker.socket",
        help="API socket used in the firecracker-api rendering",
    )
    from fireroute.cli.firecracker_cmds import configure_show

    configure_show(p)
    _common(p)


def _cfg_teardown(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true")
    _common(p)


def _cfg_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vms", type=int, default=3, help="number of microVM networks (default 3)")
    p.add_argument("--backend", default="nft", help="nft (default) or iptables")
    p.add_argument("--no-boot", action="store_true", help="network only, boot no guests")


def _cfg_repair(verb: str):  # noqa: ANN202
    def configure(p: argparse.ArgumentParser) -> None:
        from fireroute.cli import repair_cmds

        getattr(repair_cmds, f"configure_{verb}")(p)
        _common(p)

    return configure


def _fc(name: str):  # noqa: ANN202
    """A Firecracker command's configure function, imported only when it is built."""

    def configure(p: argparse.ArgumentParser) -> None:
        from fireroute.cli.firecracker_cmds import COMMANDS as FC

        FC[name][1](p)

    return configure


COMMANDS = {
    "up": ("create a VM's tap, /30, forwarding and NAT", _cfg_up),
    "plan": ("print the commands up would run (dry run)", _cfg_plan),
    "down": ("remove exactly what up created (idempotent)", _cfg_down),
    "ls": ("list VMs", _common),
    "show": ("what a VM needs, in one of several formats", _cfg_show),
    "teardown": ("every VM down, shared tables removed, forwarding restored", _cfg_teardown),
    "demo": ("a safe demonstration inside throwaway namespaces", _cfg_demo),
    "attach": ("hand a VM's tap to a Firecracker that has not started yet", _fc("attach")),
    "limit": ("change a running VM's rate limits (PATCH)", _fc("limit")),
    "config": ("merge a VM's network into a Firecracker --config-file", _fc("config")),
    "check": ("report drift between the state file and the kernel", _cfg_repair("check")),
    "gc": ("remove leftovers of crashed runs (tagged objects only)", _cfg_repair("gc")),
    "doctor": ("find host settings that break guest networking (read-only)", _cfg_repair("doctor")),
    "restore": ("recreate every active VM's networking (after a reboot)", _cfg_repair("restore")),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command is built (start-up matters for a command
    orchestrators call once per VM: building every command's parser costs ~10 ms)."""
    p = _Parser(prog="fireroute", description="Host networking for Firecracker microVMs.")
    p.add_argument("--version", action="version", version=f"fireroute {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    for name, (text, configure) in COMMANDS.items():
        if only is None or only == name:
            configure(sub.add_parser(name, help=text))
    return p


def _state(args: argparse.Namespace) -> Path:
    from fireroute.state.store import default_path

    return args.state or default_path()


def _options(args: argparse.Namespace):  # noqa: ANN202
    from fireroute.manager import pool_arg
    from fireroute.model import Options, Owner

    size = str(args.block_size).lstrip("/")
    if not (size.isascii() and size.isdigit()):
        raise UsageError(f'invalid --block-size "{args.block_size}": use 24..30 (or /24../30)')
    dns = []
    for d in args.dns:
        try:
            dns.append(IPv4Address(d))
        except ValueError:
            raise UsageError(f'invalid --dns "{d}": expected an IPv4 address') from None
    if len(dns) > 2:
        raise UsageError("at most two --dns servers fit the kernel ip= argument")
    return Options(
        backend=args.backend,
        pool=pool_arg(args.pool) if args.pool else None,
        prefix=int(size),
        uplink=args.uplink,
        table=args.table,
        tap=args.tap,
        dns=tuple(dns),
        owner=Owner.parse(args.owner) if args.owner else None,
        mac=args.mac,
        guest_iface=args.guest_iface,
        iface_id=args.iface_id,
        mode=args.mode,
        bridge=args.bridge,
        bridge_address=args.bridge_address,
        guest=args.guest_ip,
        addr_range=args.addr_range,
        dhcp=args.dhcp,
        gateway=args.gateway,
        masquerade=args.masquerade,
        clone_address=args.clone_address,
        allow_peers=args.allow_peers,
        fix_forward_policy=args.fix_forward_policy,
        allow_metadata=args.allow_metadata,
        allow_host_ports=[_port(p) for p in args.allow_host_port],
    )


def _port(text: str) -> tuple[int, str]:
    port, _, proto = text.partition("/")
    if not port.isdigit() or proto not in ("tcp", "udp"):
        raise UsageError(f'invalid --allow-host-port "{text}": use PORT/tcp or PORT/udp')
    return int(port), proto


def _names(args: argparse.Namespace) -> list[str]:
    if args.count is not None:
        if args.names:
            raise UsageError("give either vm names or --count, not both")
        if not 1 <= args.count <= 65536:
            raise UsageError(f"invalid --count {args.count}: use 1..65536")
        return [f"{args.prefix}{i}" for i in range(args.count)]
    if not args.names:
        raise UsageError("name at least one vm (or use --count N)")
    return list(args.names)


def _progress(enabled: bool):  # noqa: ANN202
    if not enabled:
        return None
    start = time.monotonic()

    def show(msg: str) -> None:
        sys.stderr.write(f"\r\x1b[K[{time.monotonic() - start:5.2f}s] {msg}")
        sys.stderr.flush()

    return show


def cmd_up(args: argparse.Namespace, dry_run: bool) -> int:
    from fireroute.manager import Manager
    from fireroute.plan.steps import as_commands
    from fireroute.render import record

    names = _names(args)
    t0 = time.monotonic()
    progress = _progress(len(names) > 1 and sys.stderr.isatty() and not dry_run)
    res = Manager(_state(args)).up(
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
            as_commands(res.plan)
            if not args.json
            else json.dumps(
                {"commands": as_commands(res.plan), "vms": [record.as_dict(v) for v in res.vms]},
                indent=2,
            )
            + "\n"
        )
        return 0
    if args.json:
        print(json.dumps([record.as_dict(v) for v in res.vms], indent=2))
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


def cmd_down(args: argparse.Namespace) -> int:
    from fireroute.manager import Manager
    from fireroute.plan.steps import as_commands

    if not args.names and not args.all:
        raise UsageError("name at least one vm (or use --all)")
    if args.names and args.all:
        raise UsageError("give either vm names or --all, not both")
    vms, plan = Manager(_state(args)).down(args.names, everything=args.all, dry_run=args.dry_run)
    if args.dry_run:
        sys.stdout.write(as_commands(plan))
        return 0
    found = {v.name for v in vms}
    if args.json:
        print(
            json.dumps(
                {"removed": sorted(found), "absent": [n for n in args.names if n not in found]}
            )
        )
        return 0
    for n in args.names:
        print(f"vm {n} down" if n in found else f"vm {n} was not up (nothing to do)")
    if args.all:
        print(f"{len(found)} vm(s) down")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from fireroute.manager import Manager
    from fireroute.render import record

    vms = Manager(_state(args)).ls()
    if args.json:
        print(json.dumps([record.as_dict(v) for v in vms], indent=2))
        return 0
    rows = [("NAME", "STATE", "MODE", "BACKEND", "DEVICE", "GATEWAY", "GUEST IP", "MAC", "UPLINK")]
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
        for v in vms
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from fireroute.cli import firecracker_cmds as fcc
    from fireroute.manager import Manager
    from fireroute.render import firecracker, guest, record

    fmt = "json" if args.json else args.format
    fcc.check_show(args, fmt)
    vm = Manager(_state(args)).show(args.name)
    out = {
        "text": lambda: record.summary(vm),
        "json": lambda: json.dumps(record.as_dict(vm), indent=2) + "\n",
        "boot-args": lambda: guest.boot_arg(vm) + "\n",
        "guest-script": lambda: fcc.show_guest_script(vm, args),
        "firecracker-api": lambda: firecracker.api_call(vm, args.socket),
        "firecracker-config": lambda: json.dumps(firecracker.config_fragment(vm), indent=2) + "\n",
        "firectl": lambda: firecracker.firectl_flag(vm) + "\n",
        "snapshot-overrides": lambda: fcc.show_snapshot_overrides(vm),
        "jailer": lambda: fcc.show_jailer(vm),
    }[fmt]()
    sys.stdout.write(out)
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    from fireroute.manager import Manager
    from fireroute.plan.steps import as_commands

    vms, plan = Manager(_state(args)).teardown(dry_run=args.dry_run)
    if args.dry_run:
        sys.stdout.write(as_commands(plan))
    elif args.json:
        print(json.dumps({"removed": [v.name for v in vms]}))
    else:
        print(f"teardown: {len(vms)} vm(s) down, fireroute's tables and rules removed")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fireroute.lab.demo import run_demo

    return run_demo(vms=args.vms, backend=args.backend, boot=not args.no_boot)


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        if argv == ["--version"]:  # asked before every per-VM call by some wrappers: no parser
            print(f"fireroute {__version__}")
            return 0
        args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
        if args.cmd is None:
            build_parser().print_help()
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
            "demo": cmd_demo,
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
