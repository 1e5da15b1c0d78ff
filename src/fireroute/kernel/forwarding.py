"""What ``net.ipv4.ip_forward`` was before fireroute switched it on, for every state file.

Forwarding is one value per network namespace, shared by every state file on the host. The
state file that switches it on may not be the one whose VM goes last, and a state file cannot
read another's. So the value it had before is recorded once per network namespace, outside any
state file: ``/run/fireroute/ip_forward-<namespace inode>`` holds the namespace's cookie (never
reused while the machine runs, unlike an inode) and the value. Whoever takes down the last
fireroute VM of the namespace, from any state file, sets the value back and removes the record.
/run is cleared at boot, as forwarding is. IPv6 forwarding (``net.ipv6.conf.all.forwarding``)
has its own record, ``ip6_forward-<inode>`` (``name`` :data:`V6`), kept the same way.
"""

from __future__ import annotations

import contextlib
import os

DIR = "/run/fireroute"
SOL_SOCKET, SO_NETNS_COOKIE = 1, 71
V4, V6, ACCEPT_RA = "ip_forward", "ip6_forward", "ip6_accept_ra"
"""the records' names: IPv4 forwarding's, IPv6's, the uplink's accept_ra (kernel/uplink6.py)"""


def _identity() -> tuple[int, int]:
    """(inode, cookie) of the caller's network namespace."""
    import _socket

    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        cookie = int.from_bytes(s.getsockopt(SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
    finally:
        s.close()
    return os.stat("/proc/self/ns/net").st_ino, cookie


def identity() -> tuple[int, int]:
    """(inode, cookie) of the caller's network namespace: a record's name and its check."""
    return _identity()


def record_path(inode: int, name: str = V4) -> str:
    return f"{DIR}/{name}-{inode}"


def recorded(name: str = V4) -> str | None:
    """The value recorded for this namespace, or None (no record, or a stale one of a
    namespace that is gone and whose inode was reused)."""
    inode, cookie = _identity()
    try:
        with open(record_path(inode, name)) as f:
            got_cookie, _, value = f.read().strip().partition(" ")
    except OSError:
        return None
    return value if got_cookie == str(cookie) and value in ("0", "1") else None


def record(value: str, name: str = V4) -> bool:
    """Record the value forwarding has before fireroute changes it, unless a record of this
    namespace exists (the first change is the one to undo); True if this call wrote it.
    Best effort: without a writable /run the state file's own record is what is left."""
    if recorded(name) is not None:
        return False
    return write(name, value)


def write(name: str, value: str) -> bool:
    """This namespace's record ``name``: its cookie and ``value`` (replaced whole); False
    when /run is not writable."""
    inode, cookie = _identity()
    path = record_path(inode, name)
    try:
        os.makedirs(DIR, mode=0o755, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{cookie} {value}\n")
        os.replace(tmp, path)
    except OSError:
        return False
    return True


def forget(name: str = V4) -> None:
    """Remove this namespace's record (forwarding was set back)."""
    inode, _ = _identity()
    try:
        os.unlink(record_path(inode, name))
    except OSError:
        return


def forget_namespace(path: str) -> None:
    """Remove the record of the namespace at ``path`` (``/var/run/netns/NAME``), for whoever
    deletes that namespace."""
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return
    try:
        names = os.listdir(DIR)
    except OSError:
        return
    for name in names:  # every record of it: forwarding's, accept_ra's, each uplink's proxy_ndp
        if name.endswith(f"-{inode}"):
            with contextlib.suppress(OSError):
                os.unlink(f"{DIR}/{name}")
