"""The daemon's router advertisements: the responder of ``fireroute ra`` (advertise.py) as a
thread of ``fireroute serve``, so that a platform needs no second process for its v6 guests.

It answers on the taps of the v6 VMs of the state file the daemon serves (made through the
daemon or by the CLI beside it): the worker tells it at once when a batch made or removed VMs
(:meth:`Advertiser.changed`), and it notices other writers within a second. One raw socket and
one thread for all taps, whatever comes and goes (and, with bridge guests, a packet socket to
write their RAs and one per bridge for their solicitations: advertise_bridge.py);
:meth:`Advertiser.stop` ends them all."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address

from fireroute.advertise import Responder
from fireroute.errors import FirerouteError

RESTART = 5.0
"""seconds before the responder runs again after a failure (the state file unreadable)"""


class Advertiser:
    def __init__(
        self,
        state: str,
        dns: Sequence[IPv6Address],
        log: Callable[[dict], None],
        sock: socket.socket | None = None,
    ) -> None:
        self.log = log
        try:
            self.responder = Responder(state, dns=dns, warn=self._warn, sock=sock)
        except OSError as exc:
            raise FirerouteError(f"cannot start the RA responder: {exc.strerror}") from None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fireroute-ra", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def changed(self) -> None:
        self.responder.changed()

    def stop(self) -> None:
        """End the thread; its socket and its state file connection are closed by it."""
        self.stopped.set()
        self.responder.stop()
        self.thread.join(10)

    def _warn(self, line: str) -> None:
        self.log({"event": "ra", "message": line})

    def _run(self) -> None:
        r = self.responder
        try:
            while not self.stopped.is_set():
                try:
                    r.run()
                except Exception as exc:  # noqa: BLE001 - logged; the daemon goes on
                    self.log({"event": "ra-error", "error": f"{type(exc).__name__}: {exc}"[:200]})
                    if r.store is not None and r.store.db is not None:
                        r.store.db.close()
                    r.store = None
                    self.stopped.wait(RESTART)
        finally:
            r.close()


def wanted(setting: object, fixed: dict[str, object], client_options: Sequence[str]) -> bool:
    """Does the daemon advertise? ``setting`` (the config's ``ra``): True, False, or
    ``"auto"``: when its VMs may have IPv6 (``ipv6`` fixed on, or a client option)."""
    if setting == "auto":
        return bool(fixed.get("ipv6")) or "ipv6" in client_options
    return bool(setting)
