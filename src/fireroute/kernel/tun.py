"""Persistent taps made in-process: what ``ip tuntap add dev X mode tap user U [group G]``
does, without starting ``ip``.

iproute2 (6.1, checked with strace here) opens /dev/net/tun and calls TUNSETIFF with
``IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL`` (EXCL: an existing device of that name, tap or not,
is EBUSY rather than attached to), then TUNSETOWNER, TUNSETGROUP, TUNSETPERSIST, then closes
the descriptor. A failure before TUNSETPERSIST leaves nothing: closing the descriptor of a
non-persistent tap deletes it. ``ip -d link show`` cannot tell the two apart
(tests/kernel/test_inproc.py compares them).
"""

from __future__ import annotations

import os

TUNSETIFF, TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP = 0x400454CA, 0x400454CB, 0x400454CC, 0x400454CE
IFF_TAP, IFF_NO_PI, IFF_TUN_EXCL = 0x0002, 0x1000, 0x8000
TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL
"""The flags ``ip tuntap add mode tap`` passes (no ``pi``, ``vnet_hdr``, ``multi_queue``)"""
IFNAMSIZ = 16
DEVICE = "/dev/net/tun"


class TunError(OSError):
    """A failed open or ioctl; ``call`` names it as ``ip`` does in its message
    (``ioctl(TUNSETIFF)``, ``open``), so ``str(err)`` is what ``ip`` prints."""

    def __init__(self, errno: int, call: str) -> None:
        super().__init__(errno, os.strerror(errno))
        self.call = call

    def __str__(self) -> str:
        return f"{self.call}: {self.strerror}"


def ifreq(name: str, flags: int = 0) -> bytes:
    """``struct ifreq`` with a name and ``ifr_flags`` (40 bytes on 64-bit Linux)."""
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw:
        raise TunError(22, "ioctl(TUNSETIFF)")  # EINVAL, as the kernel answers a bad name
    return raw.ljust(IFNAMSIZ, b"\0") + flags.to_bytes(2, "little") + bytes(22)


def add_tap(name: str, uid: int | None = None, gid: int | None = None) -> None:
    """Create the persistent tap ``name`` owned by ``uid`` (and ``gid``); TunError (an
    OSError with the errno) on failure, with nothing left behind."""
    import fcntl  # a C module; only needed here

    try:
        fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError(exc.errno or 5, "open") from None
    try:
        for call, request, arg in (
            ("ioctl(TUNSETIFF)", TUNSETIFF, ifreq(name, TAP_FLAGS)),
            ("ioctl(TUNSETOWNER)", TUNSETOWNER, uid),
            ("ioctl(TUNSETGROUP)", TUNSETGROUP, gid),
            ("ioctl(TUNSETPERSIST)", TUNSETPERSIST, 1),
        ):
            if arg is None:
                continue
            try:
                fcntl.ioctl(fd, request, arg)
            except OSError as exc:
                raise TunError(exc.errno or 5, call) from None
    finally:
        os.close(fd)
