"""The uplink's ``accept_ra`` while fireroute has IPv6 forwarding on (docs/ipv6-plan.md F9, 7.2).

An uplink that takes its IPv6 default route from router advertisements with ``accept_ra=1``
loses that route the moment IPv6 forwarding goes on, and takes no more RAs. So the first
``up --ipv6`` that switches forwarding on decides at admission (:func:`needed`) and writes
``accept_ra=2`` first, in the same plan, right before forwarding (:func:`first`; undone with
the plan if the up fails): RAs are then taken as before. What it was is recorded once per
network namespace beside forwarding's record (kernel/forwarding.py): ``ip6_accept_ra-<inode>``
holds the namespace's cookie, the uplink and its value. Whoever sets IPv6 forwarding back (the
last VM with IPv6 of the namespace, from any state file) gives the uplink its value back
(:func:`give_back`). Written only where forwarding would drop a route: an uplink with
``accept_ra`` 0 or 2, or without an RA-learned default route, is left alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from fireroute.kernel import forwarding as records
from fireroute.kernel.apply import read_sysctl
from fireroute.kernel.run import Runner
from fireroute.plan.steps import SYSCTL, Step, sysctl_path
from fireroute.want.objects import FORWARD6_KEY, PROXY_NDP

NAME = records.ACCEPT_RA
"""the record's name (in kernel/forwarding.py's directory)"""


def key(uplink: str) -> str:
    """The sysctl, in the slash form (an interface's name may hold dots)."""
    return f"net/ipv6/conf/{uplink}/accept_ra"


def needed(runner: Runner, uplink: str) -> bool:
    """Would switching IPv6 forwarding on take ``uplink``'s default route away? (Forwarding
    off, the uplink's ``accept_ra`` 1, and its default route learnt from RAs.)"""
    if read_sysctl(FORWARD6_KEY) == "1":
        return False  # (on already: nothing changes for the uplink)
    try:
        accept_ra = read_sysctl(key(uplink))
    except OSError:
        return False  # (no IPv6 on the uplink)
    if accept_ra != "1":
        return False
    res = runner(["ip", "-6", "-j", "route", "show", "default", "dev", uplink], None)
    return res.rc == 0 and '"protocol":"ra"' in res.out.replace(" ", "")


def step(uplink: str) -> Step:
    """``accept_ra=2`` on the uplink, undone by setting it back to 1."""
    back = Step(SYSCTL, f"{key(uplink)}=1", f'restore accept_ra of uplink "{uplink}"')
    what = f'keep taking router advertisements on uplink "{uplink}" under forwarding'
    return Step(SYSCTL, f"{key(uplink)}=2", what, undo=(back,))


def first(steps: list[Step], uplink: str) -> list[Step]:
    """``steps`` with :func:`step` right before the one switching IPv6 forwarding on (none:
    unchanged, forwarding is on already)."""
    on = f"{FORWARD6_KEY}=1"
    for i, s in enumerate(steps):
        if s.tool == SYSCTL and s.netns is None and s.text == on:
            return [*steps[:i], step(uplink), *steps[i:]]
    return steps


def keep_routes(
    steps: list[Step], runner: Runner, uplinks: Iterable[str], dry_run: bool = False
) -> list[Step]:
    """``steps`` (restore's, switching IPv6 forwarding on) with accept_ra=2 first on each of
    ``uplinks`` that needs it, recorded (unless a dry run) as up records it."""
    for uplink in sorted(u for u in uplinks if needed(runner, u)):
        steps = first(steps, uplink)
        if not dry_run:
            record(uplink)
    return steps


def record(uplink: str, value: str = "1") -> bool:
    """Record the uplink's value before fireroute writes 2, unless this namespace has a
    record (the first change is the one to undo); True if this call wrote it."""
    if recorded() is not None:
        return False
    return records.write(NAME, f"{uplink} {value}")


def recorded() -> tuple[str, str] | None:
    """(uplink, value) recorded for this namespace, or None (none, or a stale one)."""
    inode, cookie = records.identity()
    try:
        with open(records.record_path(inode, NAME)) as f:
            fields = f.read().split()
    except OSError:
        return None
    if len(fields) != 3 or fields[0] != str(cookie) or fields[2] not in ("0", "1"):
        return None
    return fields[1], fields[2]


def forget() -> None:
    records.forget(NAME)


def give_back() -> None:
    """IPv6 forwarding is off again: the uplink's recorded value written back (if the uplink
    still has fireroute's 2), and the record removed."""
    found = recorded()
    if found is None or read_sysctl(FORWARD6_KEY) == "1":
        return
    uplink, value = found
    with contextlib.suppress(OSError):  # (the uplink is gone: nothing to give back)
        if read_sysctl(key(uplink)) == "2":
            with open(sysctl_path(key(uplink)), "w") as f:
                f.write(value)
    forget()


# -- proxy NDP (docs/ipv6.md, proxy NDP) --------------------------------------------------------
# The uplink's proxy_ndp is 1 while a --proxy-ndp VM (of any state file) uses it: the first
# such up records what it was (once per namespace and uplink, beside forwarding's record), and
# whoever removes the last proxy entry on that uplink (a down, teardown, gc of any state file:
# the kernel's list of proxy entries is the count) writes it back.

PROXY = "ip6_proxy_ndp"
"""the records' name prefix: ``ip6_proxy_ndp.<uplink>-<inode>``"""


def _proxy_name(uplink: str) -> str:
    return f"{PROXY}.{uplink}"


def record_proxy(uplink: str) -> bool:
    """Before fireroute writes the uplink's proxy_ndp=1: its value recorded (unless it is 1
    already, or recorded); True if this call wrote the record."""
    try:
        value = read_sysctl(PROXY_NDP.format(uplink))
    except OSError:
        return False  # (no IPv6 on the uplink: the plan's write says so)
    return value != "1" and records.record(value, _proxy_name(uplink))


def forget_proxy(uplink: str) -> None:
    """The record :func:`record_proxy` wrote forgotten (an up that changed nothing)."""
    records.forget(_proxy_name(uplink))


def proxied(runner: Runner, uplink: str) -> bool:
    """Has ``uplink`` a neighbour proxy entry (of anyone)?"""
    res = runner(["ip", "-6", "-j", "neigh", "show", "proxy", "dev", uplink], None)
    return res.rc != 0 or '"dst"' in res.out  # (unreadable: kept, never switched off blindly)


def give_back_proxy(runner: Runner, uplinks: Iterable[str]) -> None:
    """Each of ``uplinks`` that has no proxy entry left gets the proxy_ndp recorded before
    fireroute's 1 (if it still has that 1), and its record goes."""
    for uplink in sorted(set(uplinks)):
        name = _proxy_name(uplink)
        value = records.recorded(name)
        if value is None or proxied(runner, uplink):
            continue
        with contextlib.suppress(OSError):
            if read_sysctl(PROXY_NDP.format(uplink)) == "1":
                with open(sysctl_path(PROXY_NDP.format(uplink)), "w") as f:
                    f.write(value)
        records.forget(name)
