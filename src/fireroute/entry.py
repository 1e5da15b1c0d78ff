"""The ``fireroute`` program: with ``CNI_COMMAND`` in its environment it is a CNI plugin;
``fireroute serve ...`` starts the daemon; every other command is the CLI's. Nothing else
happens here, so no door imports another."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "CNI_COMMAND" in os.environ:  # a runtime calls the program as a CNI plugin
        from fireroute.cni import MAX_STDIN
        from fireroute.handoff import cni

        stdin = b"" if sys.stdin is None else sys.stdin.buffer.read(MAX_STDIN + 1)
        handed = cni(os.environ, stdin)  # to the daemon the configuration names, if any
        if handed is not None:
            return handed
        from fireroute.cni.plugin import main as plugin

        return plugin(stdin=stdin)
    if argv[:1] == ["serve"]:
        from fireroute.serve import main as serve

        return serve(argv[1:])
    from fireroute.cli.main import main as cli

    return cli(argv)
