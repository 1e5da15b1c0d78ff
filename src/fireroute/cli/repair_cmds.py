"""``check``, ``gc`` and ``restore``: make the state file and the kernel agree."""

from __future__ import annotations

import argparse
import json
import sys


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


def _manager(args: argparse.Namespace):  # noqa: ANN202
    from fireroute.cli.inputs import _state
    from fireroute.manager import Manager

    return Manager(_state(args))


def cmd_check(args: argparse.Namespace) -> int:
    from fireroute import repair

    report = repair.check(_manager(args), args.names)
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


def _run(args: argparse.Namespace, verb: str) -> int:
    from fireroute import repair
    from fireroute.plan.steps import as_commands

    extra = {"instance": args.state_id} if getattr(args, "state_id", None) else {}
    plan = getattr(repair, verb)(_manager(args), dry_run=args.dry_run, **extra)
    if args.dry_run:
        sys.stdout.write(as_commands(plan))
    elif args.json:
        print(json.dumps({"commands": as_commands(plan)}))
    else:
        n = len(plan.steps)
        print(f"{verb}: nothing to do" if not n else f"{verb}: {n} step(s) done")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    return _run(args, "gc")


def cmd_restore(args: argparse.Namespace) -> int:
    return _run(args, "restore")


def configure_doctor(p: argparse.ArgumentParser) -> None:
    pass


def cmd_doctor(args: argparse.Namespace) -> int:
    from fireroute import doctor

    try:
        count = len(_manager(args).ls())
    except Exception:  # noqa: BLE001 - doctor must still run with a broken state file
        count = 0
    found = doctor.checks(count)
    if args.json:
        print(json.dumps([f.as_dict() for f in found], indent=2))
    else:
        for f in found:
            print(f"[{f.level}] {f.what}" + (f"\n       -> {f.advice}" if f.advice else ""))
    return 1 if any(f.level == doctor.FAIL for f in found) else 0
