"""The argparse parser: help, abbreviations and every error message. Built only when a command
line is not one that :func:`fireroute.cli.args.parse_hot` reads on its own."""

from __future__ import annotations

import argparse
import os
import sys

from fireroute import __version__
from fireroute.cli import args as spec
from fireroute.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

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
    every parser (for the terminal size)."""
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns - 2
    except OSError:
        width = 98
    return argparse.HelpFormatter(prog, width=max(width, 40))


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # argparse's, passed through
        kwargs.setdefault("formatter_class", _formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        verb = self.prog.removeprefix("fireroute").strip()  # "up", or "" for the top level
        raise UsageError(f"{verb}: {message}" if verb else message)


def add(p: argparse.ArgumentParser, opts: tuple[spec.Opt, ...]) -> None:
    for o in opts:
        o.add_to(p)


def common(p: argparse.ArgumentParser) -> None:
    add(p, spec.COMMON)


def _up_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="VM", help="vm name(s)")
    add(p, spec.UP)


def _cfg_up(p: argparse.ArgumentParser) -> None:
    _up_options(p)
    add(p, spec.COMMON)
    add(p, (spec.DRY_RUN, spec.DAEMON))
    from fireroute.cli.firecracker_args import configure_up

    configure_up(p)


def _cfg_plan(p: argparse.ArgumentParser) -> None:
    _up_options(p)
    common(p)


def _cfg_down(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="VM")
    add(p, spec.DOWN)


def _cfg_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="VM")
    p.add_argument("--format", default="text", choices=FORMATS)
    p.add_argument(
        "--socket",
        default="/tmp/firecracker.socket",
        help="API socket used in the firecracker-api rendering",
    )
    from fireroute.cli.firecracker_args import configure_show

    configure_show(p)
    common(p)
    add(p, (spec.DAEMON,))


def _cfg_ls(p: argparse.ArgumentParser) -> None:
    add(p, (*spec.COMMON, spec.DAEMON))


def _cfg_teardown(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true")
    common(p)


def _cfg_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="VM")
    p.add_argument("--egress", choices=("internet", "public", "none"))
    p.add_argument("--allow-out", action="append", metavar="CIDR", help="replaces the list")
    p.add_argument("--deny-out", action="append", metavar="CIDR", help="replaces the list")
    p.add_argument(
        "--reset", action="store_true", help="start from --egress internet and empty lists"
    )
    p.add_argument("--dry-run", action="store_true", help="print the result, change nothing")
    common(p)


def _cfg_publish(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="VM")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="[ADDR:]HOSTPORT:GUESTPORT[/udp]")
    p.add_argument("--dry-run", action="store_true", help="print the commands, change nothing")
    common(p)


def _cfg_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="VM", help="vm(s) (default: all)")
    p.add_argument(
        "--prometheus", action="store_true", help="the text exposition format (for node_exporter)"
    )
    common(p)


def _cfg_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vms", type=int, default=3, help="number of microVM networks (default 3)")
    p.add_argument("--backend", default="nft", help="nft (default) or iptables")
    p.add_argument("--no-boot", action="store_true", help="network only, boot no guests")


def _cfg_ra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="print a line per advertisement sent")
    p.add_argument(
        "--dns6",
        action="append",
        default=[],
        metavar="ADDR",
        help="an IPv6 DNS server every advertisement names (RDNSS, RFC 8106); repeatable",
    )
    spec.COMMON[0].add_to(p)  # --state


def _cfg_repair(verb: str):  # noqa: ANN202
    def configure(p: argparse.ArgumentParser) -> None:
        from fireroute.cli import repair_cmds

        getattr(repair_cmds, f"configure_{verb}")(p)
        common(p)

    return configure


def _fc(name: str):  # noqa: ANN202
    """A Firecracker command's configure function, imported only when it is built."""

    def configure(p: argparse.ArgumentParser) -> None:
        from fireroute.cli import firecracker_args

        getattr(firecracker_args, f"configure_{name}")(p)

    return configure


COMMANDS = {
    "up": ("create a VM's tap, /30, forwarding and NAT", _cfg_up),
    "plan": ("print the commands up would run (dry run)", _cfg_plan),
    "down": ("remove exactly what up created (idempotent)", _cfg_down),
    "ls": ("list VMs", _cfg_ls),
    "show": ("what a VM needs, in one of several formats", _cfg_show),
    "teardown": ("every VM down, shared tables removed, forwarding restored", _cfg_teardown),
    "stats": ("per-VM traffic counted by the kernel (sent/received by the guest)", _cfg_stats),
    "policy": ("change a running VM's egress policy (cuts what it forbids)", _cfg_policy),
    "publish": ("forward host ports to a running VM's ports", _cfg_publish),
    "unpublish": ("stop forwarding host ports to a running VM", _cfg_publish),
    "demo": ("a safe demonstration inside throwaway namespaces", _cfg_demo),
    "attach": ("hand a VM's tap to a Firecracker that has not started yet", _fc("attach")),
    "limit": ("change a running VM's rate limits (PATCH)", _fc("limit")),
    "config": ("merge a VM's network into a Firecracker --config-file", _fc("config")),
    "check": ("report drift between the state file and the kernel", _cfg_repair("check")),
    "gc": ("remove leftovers of crashed runs (tagged objects only)", _cfg_repair("gc")),
    "doctor": ("find host settings that break guest networking (read-only)", _cfg_repair("doctor")),
    "restore": ("recreate every active VM's networking (after a reboot)", _cfg_repair("restore")),
    "ra": ("send router advertisements to the IPv6 guests (foreground)", _cfg_ra),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command is built (building every command's parser
    costs ~10 ms)."""
    p = _Parser(
        prog="fireroute",
        description="Host networking for Firecracker microVMs.",
        epilog="fireroute serve --socket PATH [--group NAME] [--config FILE]: the daemon "
        "(HTTP and JSON on a unix socket; see the README).",
    )
    p.add_argument("--version", action="version", version=f"fireroute {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    for name, (text, configure) in COMMANDS.items():
        if only is None or only == name:
            configure(sub.add_parser(name, help=text))
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
