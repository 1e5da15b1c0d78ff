"""Groups that run inside a CNI container's namespace, done without a process: what
``nsenter --net=PATH ip -batch -`` / ``tc -batch -`` / ``sysctl -qw`` do there.

The daemon's CNI ADD makes the namespace's links (the veth with its far end in the daemon's
own namespace, the tap), brings them up with their MACs and tags, turns IPv6 off on them and
joins them with two tc redirects; DEL moves them to the doomed group and deletes the group.
Each of those groups is run here on a short-lived thread that has entered the namespace
(``setns``: a thread's network namespace is its own), with a netlink socket opened there, so
that names, ifindexes, ``/dev/net/tun`` and ``/proc/sys/net`` all mean the container's.

A group is taken only when every step is one this module encodes (the step's text is what its
operation prints); anything else, or a namespace that cannot be entered (nothing was changed
then), is left to the process, with its own messages. Failures are told as
:class:`~fireroute.kernel.inproc.InProcessExecutor` tells its own: the errno's kind and the
message ``ip`` prints; ``tc``'s differ in wording only.
"""

from __future__ import annotations

import os

from fireroute.kernel import rtnl
from fireroute.kernel.apply import Failure, Ran, _write_sysctl
from fireroute.kernel.rtnl import attr, ifinfomsg, u32
from fireroute.plan.steps import IP, SYSCTL, TC, Step
from fireroute.want.objects import CALLER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fireroute.plan.ops import Act
    from fireroute.want.netns import TcRedirect
    from fireroute.want.objects import Link

    NsOp = Callable[[rtnl.Rtnl], None]

CLONE_NEWNET = 0x40000000
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_PID = 1, 3, 18, 19
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTFILTER = 36, 37, 44
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_U32_SEL, TCA_U32_ACT = 5, 7
TCA_ACT_KIND, TCA_ACT_OPTIONS, TCA_MIRRED_PARMS = 1, 2, 2
NLA_F_NESTED = 0x8000
TC_H_INGRESS, INGRESS_HANDLE = 0xFFFFFFF1, 0xFFFF0000
TC_U32_TERMINAL, TC_ACT_STOLEN, TCA_EGRESS_REDIR = 1, 4, 1
ETH_P_ALL = 0x0003
CREATE, SET, DELETE = "create", "set", "delete"


class Unenterable(Exception):
    """The namespace could not be entered: nothing ran, the process does it (and says why)."""


_libc: object = None


def _setns(fd: int) -> None:
    global _libc
    import ctypes  # (only a CNI attachment's calls come here)

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:  # type: ignore[attr-defined]
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def in_namespace(path: str, fn: Callable[[], Ran]) -> Ran:
    """``fn()`` on a thread inside the network namespace at ``path``; its result or its
    exception. Unenterable when the namespace cannot be entered."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            box["error"] = Unenterable(f"{path}: {exc.strerror}")
            return
        except Exception as exc:  # (no ctypes, a libc without setns: nsenter does it)
            box["error"] = Unenterable(f"{path}: {exc}")
            return
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    import threading  # (not on the CLI's path)

    thread = threading.Thread(target=body, name="fireroute-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


# -- encoding ---------------------------------------------------------------------------------
def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def _name_attr(name: str) -> bytes:
    return attr(IFLA_IFNAME, name.encode() + b"\0")


class Host:
    """What kernel/inproc.py lends this module (it imports this one, not the other way):
    its encoder of one ``ip`` step, its link-name check and its batch runner."""

    def __init__(
        self,
        encode: Callable[[Step, str], NsOp | None],
        name_ok: Callable[[str | None], bool],
        run_calls: Callable[[list[NsOp], rtnl.Rtnl, bool], Ran],
    ) -> None:
        self.encode, self.name_ok, self.run_calls = encode, name_ok, run_calls


def encode(step: Step, ns: str, host: Host) -> NsOp | None:
    """The step (of a group run in ``ns``) as a function of a netlink socket opened there, or
    None when this module does not encode it: a link made (a veth whose far end goes to the
    caller's namespace, a tap), set (master, group, alias, a MAC, up) or deleted, a link group
    deleted."""
    ops: tuple[Act, ...] = getattr(step, "ops", ())
    if len(ops) != 1 or ops[0].obj.ns != ns or ops[0].obj.text(ops[0].verb) != step.text:
        return None
    verb, obj = ops[0].verb, ops[0].obj
    if obj.kind == "link" and verb == CREATE and obj.link_kind == "veth":
        return _veth(obj, host.name_ok)
    tap_mac = obj.kind == "link" and obj.link_kind == "tun" and obj.mac  # (in a tap's text)
    if verb == SET and tap_mac and not obj.mtu and not obj.master:
        return _set_with_mac(obj, host.name_ok)
    return host.encode(step, ns)


def _veth(link: Link, name_ok: Callable[[str | None], bool]) -> NsOp | None:
    if link.peer is None or link.peer[0] not in (None, CALLER) or not link.mac:
        return None
    if not (link.peer_mac and name_ok(link.name) and name_ok(link.peer[1])):
        return None
    name, mac, peer, peer_mac = link.name, _mac(link.mac), link.peer[1], _mac(link.peer_mac)
    # ``netns $$``: the namespace of the executor's process (its main thread never leaves
    # it), named by its pid as ip does, which the kernel reads in the caller's PID namespace
    # (a /proc path would name another process where /proc is another PID namespace's)
    pid = os.getpid()

    def make(nl: rtnl.Rtnl) -> None:
        far = ifinfomsg(0) + _name_attr(peer) + attr(IFLA_ADDRESS, peer_mac)
        far += attr(IFLA_NET_NS_PID, u32(pid))
        info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, far))
        body = ifinfomsg(0) + _name_attr(name) + attr(IFLA_ADDRESS, mac)
        nl.request(rtnl.RTM_NEWLINK, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
                   body + attr(IFLA_LINKINFO, info))  # fmt: skip

    return make


def _set_with_mac(link: Link, name_ok: Callable[[str | None], bool]) -> NsOp | None:
    """``link set dev X address M [group G] [alias A] [up]``: one RTM_NEWLINK."""
    if link.addrgen or not name_ok(link.name) or link.mac is None:
        return None
    name, mac, up, group, alias = link.name, _mac(link.mac), link.up, link.group, link.alias

    def set_(nl: rtnl.Rtnl) -> None:
        flags = rtnl.IFF_UP if up else 0
        body = ifinfomsg(rtnl.ifindex(name), flags, flags) + attr(IFLA_ADDRESS, mac)
        if group is not None:
            body += attr(rtnl.IFLA_GROUP, u32(group))
        if alias:
            body += attr(rtnl.IFLA_IFALIAS, alias.encode())
        nl.request(rtnl.RTM_NEWLINK, 0, body)

    return set_


def tcmsg(index: int, handle: int, parent: int, info: int = 0) -> bytes:
    return bytes(4) + u32(index) + u32(handle) + u32(parent) + u32(info)


def encode_tc(
    group: list[Step], ns: str, name_ok: Callable[[str | None], bool]
) -> list[NsOp] | None:
    """A ``tc`` group of redirects (made: the ingress qdisc, then the match-all filter with
    its mirred redirect; deleted: the qdisc) as functions, or None."""
    out: list[NsOp] = []
    made: TcRedirect | None = None  # the redirect whose filter line comes next
    for step in group:
        ops: tuple[Act, ...] = getattr(step, "ops", ())
        if made is not None and not ops and step.text == made.lines()[1]:
            out.append(_filter(made.src, made.dst))
            made = None
            continue
        if len(ops) != 1 or ops[0].obj.kind != "tc redirect" or ops[0].obj.ns != ns:
            return None
        r, verb = ops[0].obj, ops[0].verb
        if not (name_ok(r.src) and name_ok(r.dst)):
            return None
        if verb == CREATE and step.text == r.lines()[0]:
            out.append(_qdisc(r.src, RTM_NEWQDISC))
            made = r
        elif verb == DELETE and step.text == r.lines(DELETE)[0]:
            out.append(_qdisc(r.src, RTM_DELQDISC))
        else:
            return None
    return out


def _qdisc(dev: str, kind: int) -> NsOp:
    """``qdisc add|del dev X ingress``."""
    flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL if kind == RTM_NEWQDISC else 0

    def do(nl: rtnl.Rtnl) -> None:
        body = tcmsg(rtnl.ifindex(dev), INGRESS_HANDLE, TC_H_INGRESS)
        body += attr(TCA_KIND, b"ingress\0")
        nl.request(kind, flags, body + (attr(TCA_OPTIONS, b"") if kind == RTM_NEWQDISC else b""))

    return do


def _filter(dev: str, to: str) -> NsOp:
    """``filter add dev X parent ffff: protocol all u32 match u32 0 0 action mirred egress
    redirect dev Y``: a u32 filter with one key matching everything, ending the match
    (terminal), whose one action steals the frame and sends it out of Y."""

    def do(nl: rtnl.Rtnl) -> None:
        index, target = rtnl.ifindex(dev), rtnl.ifindex(to)
        sel = bytes((TC_U32_TERMINAL, 0, 1, 0)) + bytes(12) + bytes(16)  # one key: 0 0
        parms = u32(0) + u32(0) + u32(TC_ACT_STOLEN) + u32(0) + u32(0)
        parms += u32(TCA_EGRESS_REDIR) + u32(target)
        action = attr(TCA_ACT_KIND, b"mirred\0")
        action += attr(TCA_ACT_OPTIONS | NLA_F_NESTED, attr(TCA_MIRRED_PARMS, parms))
        options = attr(TCA_U32_SEL, sel) + attr(TCA_U32_ACT, attr(1, action))
        protocol = ETH_P_ALL.to_bytes(2, "big")
        body = tcmsg(index, 0, INGRESS_HANDLE, int.from_bytes(protocol, "little"))
        body += attr(TCA_KIND, b"u32\0") + attr(TCA_OPTIONS, options)
        nl.request(RTM_NEWTFILTER, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL, body)

    return do


# -- running ----------------------------------------------------------------------------------
def run_group(group: list[Step], force: bool, host: Host) -> Ran | None:
    """The group (all its steps in one namespace, a path) done in that namespace without a
    process, or None when a process must do it (nothing was changed then)."""
    ns, tool = group[0].netns, group[0].tool
    if ns is None or not ns.startswith("/"):
        return None
    if tool == SYSCTL:
        texts = [s.text for s in group]
        try:
            return in_namespace(ns, lambda: _sysctls(texts))
        except Unenterable:
            return None
    if tool == TC:
        calls = encode_tc(group, ns, host.name_ok)
    elif tool == IP:
        encoded = [encode(s, ns, host) for s in group]
        calls = None if None in encoded else encoded  # type: ignore[assignment]
    else:
        return None
    if not calls:
        return None

    def body() -> Ran:
        nl = rtnl.Rtnl()
        try:
            return host.run_calls(calls, nl, force)
        finally:
            nl.close()

    try:
        return in_namespace(ns, body)
    except Unenterable:
        return None


def _sysctls(texts: list[str]) -> Ran:
    """``sysctl -qw K=V ...``: each written (all of them, as sysctl goes on past a refusal)."""
    errors: dict[int, Failure] = {}
    for i, text in enumerate(texts):
        for _, message in _write_sysctl(text).items():
            errors[i] = Failure.of(message)
    return Ran(errors)
