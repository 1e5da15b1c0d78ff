"""What a failed kernel operation means, in one word: the object already ``exists``, something
it needs (or it itself, for a delete) is ``missing``, it is ``busy`` (in use), the caller is
``denied``, or ``other``. A process's message is classified by :func:`classify`, a netlink
error by :func:`of_errno`; the fake kernel (kernel/fake.py) answers in the same words, so a
caller branches on the kind whichever of them ran the operation.
"""

from __future__ import annotations

import errno

OK = "ok"
EXISTS, MISSING, BUSY, DENIED, OTHER = "exists", "missing", "busy", "denied", "other"
KINDS = (EXISTS, MISSING, BUSY, DENIED, OTHER)

EXISTS_TEXT = (
    "File exists",
    # EEXIST with the kernel's own message (extack) in place of strerror's
    "Address already assigned",
    "ipv6: address already assigned",  # (an IPv6 address's extack, in lower case)
    "Exclusivity flag on, cannot modify",
    # ``ip tuntap add`` passes IFF_TUN_EXCL: a device of that name, tap or not, is EBUSY
    "ioctl(TUNSETIFF): Device or resource busy",
)
MISSING_TEXT = (
    # what a best-effort removal takes for "already gone" (kernel/apply.py's GONE)
    "Cannot find device",
    "does not exist",
    "No such device",
    "No such file or directory",
    "Bad rule (does a matching rule exist",
    # an address, route or qdisc that is not there
    "Cannot assign requested address",
    "No such process",
    "Cannot find specified qdisc",
    'Invalid "netns" value',  # ``ip``: no namespace of that name
    # a route whose gateway or device is not there yet: no connected network, device down
    "Nexthop has invalid gateway",
    "Network is unreachable",
    "Nexthop device is not up",
    "Device for nexthop is not up",
)
BUSY_TEXT = ("Device or resource busy",)
DENIED_TEXT = ("Operation not permitted", "Permission denied")
ORDER = ((EXISTS, EXISTS_TEXT), (MISSING, MISSING_TEXT), (BUSY, BUSY_TEXT), (DENIED, DENIED_TEXT))
"""first match wins: a tap's EBUSY on creation is ``exists`` before any other EBUSY is busy"""

ERRNO = {
    errno.EEXIST: EXISTS,
    errno.ENOENT: MISSING,
    errno.ENODEV: MISSING,
    errno.ESRCH: MISSING,
    errno.EADDRNOTAVAIL: MISSING,
    errno.ENETUNREACH: MISSING,
    errno.ENETDOWN: MISSING,
    errno.EBUSY: BUSY,
    errno.EPERM: DENIED,
    errno.EACCES: DENIED,
}


def classify(text: str) -> str:
    """The kind of a failed command's message (``ip``, ``tc``, ``nft``, ``iptables-restore``,
    ``sysctl``)."""
    for kind, needles in ORDER:
        if any(n in text for n in needles):
            return kind
    return OTHER


def of_errno(number: int) -> str:
    """The kind of a netlink or system call's errno."""
    return ERRNO.get(number, OTHER)
