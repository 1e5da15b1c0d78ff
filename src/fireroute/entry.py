"""The ``fireroute`` program: ``fireroute serve ...`` starts the daemon, every other command is
the CLI's. Nothing else happens here, so neither door imports the other."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        from fireroute.serve import main as serve

        return serve(argv[1:])
    from fireroute.cli.main import main as cli

    return cli(argv)
