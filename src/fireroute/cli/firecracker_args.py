"""The argparse configuration of the Firecracker commands (``attach``, ``limit``, ``config``)
and of the Firecracker options of ``up --socket`` and ``show``.

Built by :mod:`fireroute.cli.parser` only; the handlers are in
:mod:`fireroute.cli.firecracker_cmds`. Nothing from :mod:`fireroute.firecracker` is imported:
``fireroute up`` read by argparse builds these options too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fireroute.cli import args as spec
from fireroute.render.guest import DEFAULT_MMDS_ADDRESS


def _common(p: argparse.ArgumentParser) -> None:
    for o in spec.COMMON:
        o.add_to(p)


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


def _vm_on_socket(p: argparse.ArgumentParser) -> None:
    """A VM of the state file and the Firecracker API socket it is handed to."""
    p.add_argument("name", metavar="VM")
    _api_options(p, socket_required=True)
    p.add_argument("--iface-id", help="Firecracker iface_id (default: the one recorded by up)")


def configure_attach(p: argparse.ArgumentParser) -> None:
    _vm_on_socket(p)
    _attach_options(p)
    _common(p)


def configure_limit(p: argparse.ArgumentParser) -> None:
    _vm_on_socket(p)
    _rate_options(p)
    _common(p)


def configure_config(p: argparse.ArgumentParser) -> None:
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
