"""``check``, ``gc`` and ``restore``: make the state file and the kernel agree."""

from __future__ import annotations

import argparse
import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fireroute.api import Outcome


def configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="VM", help="vm(s) to check (default: all)")


def configure_restore(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the commands, change nothing")


def configure_gc(p: argparse.ArgumentParser) -> None:
    configure_restore(p)
    p.add_argument(
        "--state-id",
        metavar="ID",
        help="collect the objects tagged for the state file with this id (one that was lost) "
        "instead of this state file's own",
    )


def cmd_check(args: argparse.Namespace) -> int:
    from fireroute.cli.inputs import _host

    report = _host(args).check_report(args.names)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for vm, problems in report.vms.items():
            print(f"{vm}: " + ("ok" if not problems else "; ".join(problems)))
        for what, problems in report.shared.items():
            print(f"{what}: " + ("ok" if not problems else "; ".join(problems)))
        for orphan in report.orphans:
            print(f"orphan: {orphan}")
    return 0 if report.ok() else 1


def _print(args: argparse.Namespace, verb: str, done: Outcome) -> int:
    if args.dry_run:
        sys.stdout.write(done.commands)
    elif args.json:
        print(json.dumps({"commands": done.commands}))
    else:
        n = done.steps
        print(f"{verb}: nothing to do" if not n else f"{verb}: {n} step(s) done")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from fireroute.cli.inputs import _host

    done = _host(args).collect(state_id=args.state_id or None, dry_run=args.dry_run)
    return _print(args, "gc", done)


def cmd_restore(args: argparse.Namespace) -> int:
    from fireroute.cli.inputs import _host

    return _print(args, "restore", _host(args).reconcile(dry_run=args.dry_run))


def configure_doctor(p: argparse.ArgumentParser) -> None:
    pass


def cmd_doctor(args: argparse.Namespace) -> int:
    from fireroute import doctor
    from fireroute.cli.inputs import _host

    found = _host(args).doctor()
    if args.json:
        print(json.dumps([f.as_dict() for f in found], indent=2))
    else:
        for f in found:
            print(f"[{f.level}] {f.what}" + (f"\n       -> {f.advice}" if f.advice else ""))
    return 1 if any(f.level == doctor.FAIL for f in found) else 0
