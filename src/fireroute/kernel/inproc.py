"""An executor that runs the per-VM plan steps without processes.

The plan, and so the printed commands, stays the same: this executor only changes how some
groups run. A step carries the operations it does (plan/ops.py ``OpStep.ops``); an ``ip``
group whose every step is one operation :func:`encode` knows (a tap made, a link set or
deleted, an address or a device's route added, a link group deleted) is done from those
objects with ioctls
(kernel/tun.py) and rtnetlink (kernel/rtnl.py), as ``ip -batch`` runs its lines: stop at the
first failing step (``-force``: go on). Each failure is given with its kind (kernel/kinds.py,
from the errno) and the message ``ip`` prints for it, as kernel/apply.py's :class:`Ran`. An
``nft`` group of set-element operations goes through nf_tables netlink (kernel/nftnl.py),
encoded from the elements; a group of element lines without operations, from its script.
When that path cannot or may not handle it (another shape, a missing table, any refusal:
the batch then changed nothing), ``nft -f -`` runs it instead, so nft's behaviour and
messages are kept exactly. Every other group, and anything inside another namespace, runs as
:class:`Executor` runs it; failure handling and unwinding are Executor's own, unchanged.

Usage: ``InProcessExecutor(runner).apply_all(plan)`` wherever ``Executor`` is used; keep one
instance (it holds two netlink sockets, in the namespace it first used) for many plans.
"""

from __future__ import annotations

import errno

from fireroute.kernel import rtnl, tun
from fireroute.kernel.apply import Executor, Failure, Ran
from fireroute.kernel.kinds import EXISTS, of_errno
from fireroute.kernel.nftnl import NftError, Nftnl, Unsupported
from fireroute.kernel.run import Child, Done, Result, Runner, run
from fireroute.plan.steps import IP, NFT, Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fireroute.plan.ops import Act
    from fireroute.want.netns import Route
    from fireroute.want.objects import Addr, Link

    IpOp = Callable[[rtnl.Rtnl], None]

CREATE, SET, DELETE = "create", "set", "delete"  # (plan/ops.py's verbs)


def _name(text: str | None) -> bool:
    """A link name ``ip`` takes as it is (anything else is left to ``ip`` and its message)."""
    return text is not None and 0 < len(text.encode()) < 16 and "/" not in text and ":" not in text


def encode(step: Step, ns: str | None = None) -> IpOp | None:
    """The ``ip`` step's one operation as a function doing it in-process, or None for a step
    without one this module encodes. A step is encoded only when its text is what its
    operation prints (the dry run is what runs). Encoded, in the caller's namespace (or, for
    kernel/nsexec.py, in the namespace ``ns`` its objects are in, entered by the caller):

    - a tap created (``tuntap add dev X mode tap user U [group G]``)
    - a link set: master, group, alias, ``addrgenmode none``, up (not an MTU or a MAC)
    - a link deleted; a link group deleted (``link del group G``)
    - an address added (IPv4, or IPv6 with or without ``nodad``: a v6 tap's ``fe80::1/64``)
    - a route to a prefix through a device, no gateway, added or deleted (a v6 tap's route
      to its /64; deleted before a group delete of many such taps, with the kernel's own
      routes of the tap, some in the local table)
    """
    ops: tuple[Act, ...] = getattr(step, "ops", ())
    if len(ops) != 1:
        return None
    verb, obj = ops[0].verb, ops[0].obj
    if obj.ns != ns or obj.text(verb) != step.text:
        return None
    if obj.kind == "link" and _name(obj.name):
        return _link(verb, obj)
    if obj.kind == "addr" and verb == CREATE and _name(obj.dev):
        return _address(obj)
    if obj.kind == "route" and verb in (CREATE, DELETE) and obj.via is None and _name(obj.dev):
        return _route(obj, verb)
    if obj.kind == "link group" and verb == DELETE:
        group: int = obj.group
        return lambda nl: nl.del_group(group)
    return None


def _link(verb: str, link: Link) -> IpOp | None:
    name = link.name
    if verb == CREATE and link.link_kind == "tun" and link.uid is not None:
        uid, gid = link.uid, link.gid
        return lambda _: tun.add_tap(name, uid, gid)
    if verb == SET and link.addrgen not in (None, "none"):  # (another mode: left to ip)
        return None
    if verb == SET and not link.mtu and not (link.mac and link.link_kind in ("tun", "bridge")):
        master = link.master
        if master is not None and not _name(master):
            return None
        up, group, alias, gen = link.up, link.group, link.alias or None, bool(link.addrgen)
        return lambda nl: _link_set(nl, name, up, group, alias, master, gen)
    if verb == DELETE:
        return lambda nl: nl.del_link(rtnl.ifindex(name))
    return None


def _prefix(cidr: str) -> tuple[str, int] | None:
    """``A/L`` as (address, length) when A is an address (IPv4 dotted, or IPv6) and L fits
    its family; None for anything else (``ip`` then reads it, with its own messages)."""
    ip, _, plen = cidr.partition("/")
    if not plen.isdigit() or (":" not in ip and ip.count(".") != 3):
        return None
    try:
        family, _ = rtnl.packed(ip)
    except OSError:
        return None
    return (ip, int(plen)) if int(plen) <= (128 if family == rtnl.AF_INET6 else 32) else None


def _address(addr: Addr) -> IpOp | None:
    found = _prefix(addr.cidr)
    if found is None:
        return None
    (ip, prefixlen), dev, nodad = found, addr.dev, addr.nodad
    return lambda nl: nl.add_address(rtnl.ifindex(dev), ip, prefixlen, nodad)


def _route(route: Route, verb: str = CREATE) -> IpOp | None:
    found = _prefix(route.dst)
    if found is None or route.dev is None:
        return None
    (dst, length), dev = found, route.dev
    if verb == DELETE:
        table = rtnl.RT_TABLE_LOCAL if route.table == "local" else rtnl.RT_TABLE_MAIN
        return lambda nl: nl.del_route(rtnl.ifindex(dev), dst, length, table)
    if route.table is not None:
        return None
    return lambda nl: nl.add_route(rtnl.ifindex(dev), dst, length)


class BadMaster(OSError):
    """``ip``'s message for a master that does not exist."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.ENODEV, "No such device")
        self.name = name

    def __str__(self) -> str:
        return f'Error: argument "{self.name}" is wrong: Device does not exist'


def _link_set(
    nl: rtnl.Rtnl,
    dev: str,
    up: bool,
    group: int | None,
    alias: str | None,
    master: str | None,
    no_addrgen: bool = False,
) -> None:
    index = rtnl.ifindex(dev)  # ip resolves the device first, then the master
    master_index = None
    if master is not None:
        try:
            master_index = rtnl.ifindex(master)
        except rtnl.NoDevice:
            raise BadMaster(master) from None
    nl.set_link(index, up, group, alias, master_index, no_addrgen)


def failure(exc: OSError) -> Failure:
    """A refusal's message (as ``ip`` prints it) and its kind, from the errno: a tap whose
    name is taken (EBUSY from TUNSETIFF, IFF_TUN_EXCL) ``exists``."""
    number = exc.errno or errno.EIO
    if isinstance(exc, tun.TunError) and exc.call == "ioctl(TUNSETIFF)" and number == errno.EBUSY:
        return Failure(str(exc), EXISTS)
    return Failure(str(exc), of_errno(number))


class InProcessExecutor(Executor):
    """:class:`Executor` with ``ip`` and set-element ``nft`` groups done in-process."""

    def __init__(self, runner: Runner = run, fault: str | None = None) -> None:
        super().__init__(runner, fault)
        self.rtnl = rtnl.Rtnl()
        self.nftnl = Nftnl()
        self.in_process = 0
        """groups this executor ran without a process (for tests and benchmarks)"""

    def close(self) -> None:
        self.rtnl.close()
        self.nftnl.close()

    def _start_group(self, group: list[Step], force: bool) -> Child | Done | Ran | None:
        tool = group[0].tool
        if group[0].netns is not None and self.runner is run:
            from fireroute.kernel import nsexec  # (a CNI namespace's groups: the daemon's)

            done = nsexec.run_group(group, force, nsexec.Host(encode, _name, run_calls))
            if done is not None:
                self.in_process += 1
                return done
        if group[0].netns is not None or self.runner is not run:
            return super()._start_group(group, force)
        if tool == IP:
            calls = [encode(s) for s in group]
            if None not in calls:
                self.in_process += 1
                return self._run_ip(calls, force)  # type: ignore[arg-type]
        elif tool == NFT and self._nft(group):
            self.in_process += 1
            return Done(Result(0, "", ""))
        return super()._start_group(group, force)

    def _nft(self, group: list[Step]) -> bool:
        """The group's elements written through netlink: False when nft must run it."""
        try:
            self.nftnl.run_steps(group)
        except (Unsupported, NftError):
            return False  # nothing changed: nft itself does it, with its own messages
        except OSError:  # the socket itself failed (in an unknown state): start afresh
            self.nftnl.close()
            return False
        return True

    def _run_ip(self, calls: list[IpOp], force: bool) -> Ran:
        """The steps one by one, as ``ip [-force] -batch -`` runs them."""
        return run_calls(calls, self.rtnl, force)


def run_calls(calls: list[IpOp], nl: rtnl.Rtnl, force: bool) -> Ran:
    """The encoded steps one by one on ``nl``, as ``ip [-force] -batch -`` runs them: stop at
    the first failure (``force``: go on); the failures by index."""
    errors: dict[int, Failure] = {}
    for n, call in enumerate(calls):
        try:
            call(nl)
        except OSError as exc:
            if not isinstance(exc, tun.TunError | rtnl.RtnlError | rtnl.NoDevice | BadMaster):
                nl.close()  # a socket-level failure: start afresh next time
                exc = rtnl.RtnlError(exc.errno or errno.EIO)
            errors[n] = failure(exc)
            if not force:
                break
    return Ran(errors)
