"""What the CLI's parsed arguments ask for: the state file (and the core over it,
:class:`fireroute.Host`), the VM names, the options of ``up`` (through
:mod:`fireroute.request`, as every door), and the progress line."""

from __future__ import annotations

import sys
import time

from fireroute.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace

    from fireroute.api import Host
    from fireroute.cli.args import Args


def _state(args: Namespace | Args) -> str:
    from fireroute.state.store import default_path

    return args.state or default_path()


def _host(args: Namespace | Args, *, in_process: bool = False) -> Host:
    from fireroute.api import Host

    return Host(_state(args), in_process=in_process)


def _fields(args: Namespace | Args) -> dict[str, object]:
    """The options of ``up`` by the names the API uses, not yet checked."""
    from fireroute import request

    fields = {
        k: getattr(args, k)
        for k in request.FIELDS
        if k != "allow_host_ports" and k not in request.CNI_ONLY
    }
    return {**fields, "allow_host_ports": args.allow_host_port}


def _options(args: Namespace | Args):  # noqa: ANN202
    from fireroute import request

    return request.options(_fields(args))


def _names(args: Namespace | Args) -> list[str]:
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
