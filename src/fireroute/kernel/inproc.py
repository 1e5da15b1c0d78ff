"""An executor that runs the per-VM plan steps without processes.

The plan, and so the printed commands, stays the same: this executor only changes how some
groups run. An ``ip`` group whose every line has a shape listed in :func:`parse_ip` is done
with ioctls (kernel/tun.py) and rtnetlink (kernel/rtnl.py), answering as ``ip -batch`` does:
stop at the first failing line (``-force``: go on), and report each failure as the error
text ``ip`` prints followed by ``Command failed -:N``. An ``nft`` group of set-element lines
goes through nf_tables netlink (kernel/nftnl.py); when that path cannot or may not handle it
(another shape, a missing table, any refusal: the batch then changed nothing), ``nft -f -``
runs it instead, so nft's behaviour and messages are kept exactly. Every other group, and
anything inside another namespace, runs as :class:`Executor` runs it; failure handling and
unwinding are Executor's own, unchanged.

Usage: ``InProcessExecutor(runner).apply_all(plan)`` wherever ``Executor`` is used; keep one
instance (it holds two netlink sockets, in the namespace it first used) for many plans.
"""

from __future__ import annotations

import _socket

from fireroute.kernel import rtnl, tun
from fireroute.kernel.apply import FAILED, Executor
from fireroute.kernel.nftnl import NftError, Nftnl, Unsupported
from fireroute.kernel.run import Child, Done, Result, Runner, run
from fireroute.plan.steps import IP, NFT, Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    IpOp = Callable[[rtnl.Rtnl], None]


def _uint(text: str, limit: int = 1 << 32) -> int | None:
    return int(text) if text.isdigit() and int(text) < limit else None


def _name(text: str) -> str | None:
    raw = text.encode()
    return text if 0 < len(raw) < 16 and "/" not in text and ":" not in text else None


def _options(words: list[str], known: set[str]) -> dict[str, str] | None:
    """``key value`` pairs (``up`` stands alone); None on an unknown or repeated word."""
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        key = words[i]
        if key in out or key not in known:
            return None
        if key == "up":
            out[key] = ""
            i += 1
            continue
        if i + 1 >= len(words):
            return None
        out[key] = words[i + 1]
        i += 2
    return out


def parse_ip(line: str) -> IpOp | None:
    """An ``ip -batch`` line as a function doing it in-process, or None for a shape not
    handled here. Shapes (every IP line of the NAT and bridge per-VM plans; clone mode's lines
    name namespaces and run as processes):

    - ``tuntap add dev X mode tap [user U] [group G]`` (numeric U and G)
    - ``address add A/P dev X`` (IPv4)
    - ``link set dev X [master M] [group G] [alias A] [up]``
    - ``link del dev X``
    - ``link del group G``
    """
    w = line.split()
    if len(w) >= 6 and w[:3] == ["tuntap", "add", "dev"] and w[4:6] == ["mode", "tap"]:
        opts = _options(w[6:], {"user", "group"})
        tap = _name(w[3])
        if opts is None or tap is None:
            return None
        uid = _uint(opts["user"]) if "user" in opts else None
        gid = _uint(opts["group"]) if "group" in opts else None
        if ("user" in opts and uid is None) or ("group" in opts and gid is None):
            return None
        return lambda _: tun.add_tap(tap, uid, gid)
    if len(w) == 5 and w[:2] == ["address", "add"] and w[3] == "dev":
        addr, _, plen = w[2].partition("/")
        prefixlen, on = _uint(plen, 33), _name(w[4])
        if addr.count(".") != 3 or prefixlen is None or on is None:
            return None
        try:
            _socket.inet_aton(addr)
        except OSError:
            return None
        return lambda nl: nl.add_address(rtnl.ifindex(on), addr, prefixlen)
    if len(w) >= 5 and w[:3] == ["link", "set", "dev"]:
        link = _name(w[3])
        opts = _options(w[4:], {"master", "group", "alias", "up"})
        if link is None or not opts:
            return None
        group = _uint(opts["group"]) if "group" in opts else None
        master = _name(opts["master"]) if "master" in opts else None
        if ("group" in opts and group is None) or ("master" in opts and master is None):
            return None
        alias = opts.get("alias")
        return lambda nl: _link_set(nl, link, "up" in opts, group, alias, master)
    if len(w) == 4 and w[:3] == ["link", "del", "dev"] and _name(w[3]):
        dev = w[3]
        return lambda nl: nl.del_link(rtnl.ifindex(dev))
    if len(w) == 4 and w[:3] == ["link", "del", "group"] and _uint(w[3]) is not None:
        group = int(w[3])
        return lambda nl: nl.del_group(group)
    return None


class BadMaster(OSError):
    """``ip``'s message for a master that does not exist."""

    def __init__(self, name: str) -> None:
        super().__init__(19, "No such device")
        self.name = name

    def __str__(self) -> str:
        return f'Error: argument "{self.name}" is wrong: Device does not exist'


def _link_set(
    nl: rtnl.Rtnl, dev: str, up: bool, group: int | None, alias: str | None, master: str | None
) -> None:
    index = rtnl.ifindex(dev)  # ip resolves the device first, then the master
    master_index = None
    if master is not None:
        try:
            master_index = rtnl.ifindex(master)
        except rtnl.NoDevice:
            raise BadMaster(master) from None
    nl.set_link(index, up, group, alias, master_index)


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

    def _start_group(self, group: list[Step], force: bool) -> Child | Done | None:
        tool = group[0].tool
        if group[0].netns is not None or self.runner is not run:
            return super()._start_group(group, force)
        if tool == IP:
            ops = [parse_ip(s.text) for s in group]
            if all(op is not None for op in ops):
                self.in_process += 1
                return Done(self._run_ip(ops, force))  # type: ignore[arg-type]
        elif tool == NFT:
            script = "".join(s.text if s.text.endswith("\n") else s.text + "\n" for s in group)
            try:
                self.nftnl.run(script)
            except (Unsupported, NftError):
                pass  # nothing changed: nft itself does it, with its own messages
            except OSError:  # the socket itself failed (in an unknown state): start afresh
                self.nftnl.close()
            else:
                self.in_process += 1
                return Done(Result(0, "", ""))
        return super()._start_group(group, force)

    def _run_ip(self, ops: list[IpOp], force: bool) -> Result:
        """The lines one by one, as ``ip [-force] -batch -`` runs them."""
        err: list[str] = []
        for n, op in enumerate(ops, 1):
            try:
                op(self.rtnl)
            except OSError as exc:
                if not isinstance(exc, tun.TunError | rtnl.RtnlError | rtnl.NoDevice | BadMaster):
                    self.rtnl.close()  # a socket-level failure: start afresh next time
                    exc = rtnl.RtnlError(exc.errno or 5)
                err.append(f"{exc}\n{FAILED}{n}\n")
                if not force:
                    break
        return Result(1 if err else 0, "", "".join(err))
