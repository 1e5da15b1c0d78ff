"""Link-group deletions that return once the kernel has removed the links, not once it has
finished with them: the daemon's worker overlaps the deletions of successive batches.

Deleting a link holds RTNL only while the kernel unregisters it; after releasing RTNL the
deleting task waits (rcu_barrier, then until the last reference is dropped: ~20 ms) before
the netlink request is acknowledged. The links are gone from the namespace before that wait:
the kernel first unlists every link of the group (their names and indexes no longer resolve,
a new link may take a name), then multicasts one RTM_DELLINK per link. What remains cannot
fail (it returns nothing to report).

:class:`EarlyRtnl` is the worker's :class:`~fireroute.kernel.rtnl.Rtnl` with one change:
``del_group`` (and ``del_link``: a batch of one VM) sends the request from a thread of its own
(a netlink request runs inside the sender's system call, wait included) and returns as soon
as a listener on RTNLGRP_LINK, bound before the request was sent, sees an RTM_DELLINK of a
link of that group (of that index; of a link this channel moved into the group, where it did
so: a previous deletion's notifications, sent after its first, cannot pass for this one's).
If the request ends first (a refusal: nothing was deleted), it returns or raises what the
request did. So the caller's next steps (nft elements, the state file) and the next batch's
deletion run while the kernel waits, and no caller is answered before its links are gone.
``drain`` waits for the deletions still in the kernel (the daemon's shutdown); an
acknowledgement that, against the kernel's contract, reports a failure after the links were
seen gone is written to stderr and counted in ``late_failures``, never dropped.
"""

from __future__ import annotations

import _socket
import os
import select
import sys
import threading
from typing import Any

from fireroute.kernel import rtnl
from fireroute.kernel.netlink import messages

AF_NETLINK = 16
RTNLGRP_LINK = 1  # its bit in a netlink socket's multicast groups
LISTEN_BUFFER = 1 << 20
IFINFOMSG = 16


def group_of(msg: memoryview) -> int | None:
    """The IFLA_GROUP of an RTM_NEWLINK/RTM_DELLINK message (header included), or None."""
    at = 16 + IFINFOMSG
    while at + 4 <= len(msg):
        length = int.from_bytes(msg[at : at + 2], "little")
        kind = int.from_bytes(msg[at + 2 : at + 4], "little") & 0x3FFF
        if length < 4:
            break
        if kind == rtnl.IFLA_GROUP and length >= 8:
            return int.from_bytes(msg[at + 4 : at + 8], "little")
        at += (length + 3) & ~3
    return None


def index_of(msg: memoryview) -> int:
    """The link index of an RTM_NEWLINK/RTM_DELLINK message (header included)."""
    return int.from_bytes(msg[20:24], "little")


class Deletion:
    """One deletion request under way on a thread of its own: ``link del group G`` (``group``)
    or ``link del dev X`` (``index``)."""

    def __init__(
        self, group: int | None = None, index: int | None = None, among: set[int] | None = None
    ) -> None:
        self.group, self.index = group, index
        self.among = among or set()
        """the indexes of the links moved into the group (empty: not known, any will do)"""
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.wake_r, self.wake_w = os.pipe()
        self.thread = threading.Thread(target=self._run, name="fireroute-unlink", daemon=True)

    def __str__(self) -> str:
        return f"link group {self.group}" if self.group is not None else f"link {self.index}"

    def gone(self, msg: memoryview) -> bool:
        """Whether an RTM_DELLINK message shows the deletion's links gone."""
        if self.group is not None:
            return group_of(msg) == self.group and (not self.among or index_of(msg) in self.among)
        return index_of(msg) == self.index

    def _run(self) -> None:
        channel = rtnl.Rtnl()
        try:
            if self.group is not None:
                channel.del_group(self.group)
            else:
                channel.del_link(int(self.index or 0))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc
        finally:
            channel.close()
            self.finished.set()
            os.write(self.wake_w, b"x")


class EarlyRtnl(rtnl.Rtnl):
    """:class:`Rtnl` whose ``del_group`` and ``del_link`` return once the links are gone."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deletion] = []
        """deletions whose links are gone and whose requests are still in the kernel"""
        self.late_failures: list[BaseException] = []
        self.lock = threading.Lock()
        self.grouped: dict[int, set[int]] = {}
        """the links this channel moved into each group since it was last deleted"""

    def set_link(
        self, index: int, up: bool = False, group: int | None = None, *more: Any, **named: Any
    ) -> None:
        super().set_link(index, up, group, *more, **named)
        if group is not None:
            self.grouped.setdefault(group, set()).add(index)

    def del_group(self, group: int) -> None:
        self._delete(Deletion(group=group, among=self.grouped.pop(group, None)))

    def del_link(self, index: int) -> None:
        self._delete(Deletion(index=index))

    def _delete(self, deletion: Deletion) -> None:
        listener = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, 0)
        try:
            listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, LISTEN_BUFFER)
            listener.bind((0, RTNLGRP_LINK))  # before the request: no notification is missed
            deletion.thread.start()
            gone = _wait_gone(listener, deletion)
        except BaseException:
            if deletion.thread.ident is None:  # never sent
                _close(deletion)
            raise
        finally:
            listener.close()
        if not gone:  # the request ended first: what it did is the answer
            deletion.thread.join()
            _close(deletion)
            if deletion.error is not None:
                raise deletion.error
            return
        with self.lock:
            self.pending = [d for d in self.pending if not self._reap(d)]
            self.pending.append(deletion)

    def _reap(self, deletion: Deletion) -> bool:
        """True (and the deletion's failure recorded) if its request has ended."""
        if not deletion.finished.is_set():
            return False
        deletion.thread.join()
        _close(deletion)
        if deletion.error is not None:
            self.late_failures.append(deletion.error)
            print(
                f"fireroute serve: deleting {deletion} failed after its links "
                f"were gone: {deletion.error}",
                file=sys.stderr,
            )
        return True

    def drain(self) -> None:
        """Wait for every deletion still in the kernel."""
        with self.lock:
            pending, self.pending = self.pending, []
        for deletion in pending:
            deletion.finished.wait()
            self._reap(deletion)

    def close(self) -> None:
        self.drain()
        super().close()


def _wait_gone(listener: _socket.socket, deletion: Deletion) -> bool:
    """True once the listener has seen an RTM_DELLINK of the group; False if the request
    ended first (or notifications were lost: the request's end is then the only proof)."""
    while True:
        ready, _, _ = select.select([listener.fileno(), deletion.wake_r], [], [])
        if listener.fileno() in ready:
            try:
                data = memoryview(listener.recv(1 << 16))
            except OSError:  # ENOBUFS: notifications lost; wait for the request itself
                return False
            for kind, _, msg in messages(data):
                if kind == rtnl.RTM_DELLINK and deletion.gone(msg):
                    return True
        elif deletion.wake_r in ready:
            return False


def _close(deletion: Deletion) -> None:
    os.close(deletion.wake_r)
    os.close(deletion.wake_w)
