"""``fireroute serve``: the verbs over HTTP/1.1 with JSON bodies on a unix socket, for
orchestrators in other languages and for clients without root.

A door like the CLI: it parses requests, calls :class:`fireroute.Host` and answers; what a
client may ask for is fixed by the operator's config (config.py). One worker thread owns the
state file and the kernel (worker.py); connections are served by threads of their own
(http.py), so a slow client never holds up the others.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from fireroute.serve.http import main as run

    return run(argv)
