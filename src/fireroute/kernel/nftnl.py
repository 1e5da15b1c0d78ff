"""Set elements through nf_tables netlink, in-process: the ``nft -f -`` steps of per-VM up
and down plans once the table exists, without starting ``nft`` (~1.5 ms each).

Handled: steps whose operations (plan/ops.py) are all set or map elements added or deleted,
encoded from those typed objects (never from the step's printed script); the elements of
several tables (a VM with IPv6: the ip table's, then the ip6 table's) in one batch, as ``nft``
runs the steps' scripts as one transaction. The sets those scripts declare are checked, not
sent: the table's sets are read (one NFT_MSG_GETSET dump) and each declared set
must exist with the declared key type, as the kernel would require for the re-declaration
``nft`` sends to succeed without changing anything. The elements go in one NFNL batch
(NFT_MSG_NEWSETELEM with NLM_F_CREATE, as ``add element`` does; NFT_MSG_DELSETELEM), which
the kernel applies all or nothing, with each element's comment as the NFTA_SET_ELEM_USERDATA
TLV ``nft list`` shows as ``comment "..."``.

Anything else raises :class:`Unsupported` (a step with other operations or none, a table or
set that is missing or differs, a value this module cannot encode) or :class:`NftError` (the kernel
refused the batch, which then changed nothing): the caller then runs ``nft -f -`` itself, so
every refusal and every creation keeps ``nft``'s exact behaviour and messages.
"""

from __future__ import annotations

import _socket
import os

from fireroute.kernel.netlink import Channel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

AF_NETLINK, NETLINK_NETFILTER, SOL_NETLINK = 16, 12, 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x2, 0x4, 0x300, 0x400
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSET, NFT_MSG_GETSET = 9, 10
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE, NFTA_SET_KEY_LEN = 1, 2, 3, 4, 5
NFTA_SET_DATA_TYPE, NFTA_SET_TIMEOUT, NFTA_SET_EXPR, NFTA_SET_EXPRESSIONS = 6, 11, 17, 18
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_USERDATA, NFTA_DATA_VALUE = 1, 1, 6, 1
NFTA_SET_ELEM_KEY_END = 10
NLA_F_NESTED = 0x8000
NFTNL_UDATA_SET_ELEM_COMMENT = 0
FAMILIES = {"ip": 2, "ip6": 10, "inet": 1, "bridge": 7}
AF_INET6 = 10
TYPE_BITS = 6
TYPES = {  # nft datatype name -> (id, length in bytes)
    "ipv4_addr": (7, 4),
    "ipv6_addr": (8, 16),
    "ether_addr": (9, 6),
    "inet_proto": (12, 1),
    "inet_service": (13, 2),
    "ifname": (41, 16),
    "integer": (4, 8),  # (a 64-bit raw payload field of a typeof key, the only width used)
}
TYPEOF = {"iifname": "ifname", "@th,64,64": "integer"}
"""The fields of a ``typeof`` key fireroute declares -> their datatype"""
NAMES = {kind: name for name, (kind, _) in TYPES.items()}
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}
MAX_BATCH = 1 << 17
"""Larger scripts go to ``nft`` (a kernel socket buffer is ~208 KiB)."""


class Unsupported(Exception):
    """This script (or the table it names) is not one the fast path handles."""


class NftError(OSError):
    """The kernel refused the batch (nothing was changed): errno and extended-ack text."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(errno, os.strerror(errno))
        self.message = message


# -- the operations ----------------------------------------------------------------------
class Ops:
    """One table's transaction: ``declared`` set name -> type text (the sets its script
    declares; None when it declares none), and the element operations in order as (verb,
    set, [(fields, comment)])."""

    __slots__ = ("family", "table", "declared", "maps", "ops")

    def __init__(self, family: str, table: str) -> None:
        self.family = family
        self.table = table
        self.declared: dict[str, str] | None = None
        self.maps: list[str] = []
        """maps the script declares: they must exist (their elements are left to nft)"""
        self.ops: list[tuple[str, str, list[tuple[list[str], str | None]]]] = []


def of_steps(steps: Sequence[Any]) -> list[Ops] | None:
    """What steps whose operations are all set elements do, as Ops, one per table in
    the order the steps name them (plan/compiler.py's transactions: a step creating elements
    declares the sets it writes and adds them; one deleting them declares, adds, then
    deletes them, which removes them whether or not they were there): None when some step
    carries no operations or others. Each set's key type is the layout's (want/nft.py,
    want/tables6.py for the ip6 family), checked against the kernel's by :meth:`Nftnl.build`."""
    tables = _elements(steps)
    if not tables:
        return None
    from fireroute.want.nft import FILTER_SETS, RANK

    out = []
    for (family, table), elems in tables.items():
        ops = Ops(family, table)
        written = sorted({e.set for _, e in elems}, key=lambda n: RANK.get(n, len(RANK)))
        if family == "bridge":
            ops.declared = dict(FILTER_SETS)
        else:
            sets, maps = _layout(family)
            ops.declared = {n: sets[n] for n in written if n in sets}
            ops.maps = [n for n in written if n in maps]
        for verb in ("add", "delete"):
            for name in written:
                of = [e for v, e in elems if e.set == name and (verb == "add" or v == "delete")]
                if of:
                    ops.ops.append((verb, name, [_fields(e) for e in of]))
        out.append(ops)
    return out


def _layout(family: str) -> tuple[dict[str, str], dict[str, str]]:
    """A NAT table's sets and maps (name -> type) of the family."""
    if family == "ip6":
        from fireroute.want.tables6 import MAPS6, SETS6

        return SETS6, MAPS6
    from fireroute.want.nft import MAPS, SETS

    return SETS, MAPS


def _elements(steps: Sequence[Any]) -> dict[tuple[str, str], list[tuple[str, Any]]] | None:
    """(verb, element) of each step's operations in order, by (family, table) in the order
    first named; None unless every step has some and all are elements of tables of the
    caller's namespace."""
    out: dict[tuple[str, str], list[tuple[str, Any]]] = {}
    for s in steps:
        acts = getattr(s, "ops", ())
        if not acts:
            return None
        for a in acts:
            e = a.obj
            if e.kind != "nft element" or e.ns is not None or e.family not in FAMILIES:
                return None
            if a.verb not in ("create", "delete"):
                return None
            out.setdefault((e.family, e.table), []).append((a.verb, e))
    return out or None


def _fields(e: Any) -> tuple[list[str], str | None]:
    """An element's key fields (its value as nft writes it: ``"fr-a" . 172.16.0.2``; a map
    element's key, before `` : ``) and comment (its owner tag)."""
    return e.value.partition(" : ")[0].split(" . "), e.owner


# -- keys ---------------------------------------------------------------------------------
def key_type(type_text: str) -> tuple[int, int, list[int]]:
    """``ifname . ipv4_addr`` as nft declares it: (key type, key length, field ids). A
    concatenation's id packs the fields' ids 6 bits each; its fields are 4-byte aligned."""
    typeof = type_text.startswith("typeof ")
    kinds = [t.strip() for t in type_text.removeprefix("typeof ").split(" . ")]
    if typeof:
        kinds = [TYPEOF.get(k, "?") for k in kinds]
    if any(k not in TYPES for k in kinds):
        raise Unsupported(f"type {type_text!r}")
    ktype = 0
    for k in kinds:
        ktype = (ktype << TYPE_BITS) | TYPES[k][0]
    if len(kinds) == 1:
        return ktype, TYPES[kinds[0]][1], [TYPES[kinds[0]][0]]
    return ktype, sum((TYPES[k][1] + 3) & ~3 for k in kinds), [TYPES[k][0] for k in kinds]


def field_ids(ktype: int) -> list[int]:
    """The field ids packed in a key type (every id here is non-zero)."""
    out = []
    while ktype:
        out.append(ktype & ((1 << TYPE_BITS) - 1))
        ktype >>= TYPE_BITS
    return out[::-1]


def encode_field(kind: int, text: str) -> bytes:
    """One value as the kernel stores it (network byte order)."""
    quoted = text.startswith('"')
    value = text[1:-1] if quoted else text
    encoder = _ENCODERS.get(NAMES.get(kind, ""))
    raw = encoder(value, quoted) if encoder is not None else None
    if raw is None:
        raise Unsupported(f"value {text!r}")
    return raw


def _ifname(value: str, quoted: bool) -> bytes | None:
    raw = value.encode()
    return raw.ljust(16, b"\0") if quoted and 0 < len(raw) < 16 else None


def _address(family: int, value: str) -> bytes | None:
    try:
        return _socket.inet_pton(family, value)
    except OSError:
        return None


def _ipv4(value: str, quoted: bool) -> bytes | None:
    return _address(_socket.AF_INET, value) if not quoted and value.count(".") == 3 else None


def _ipv6(value: str, quoted: bool) -> bytes | None:
    return _address(AF_INET6, value) if not quoted and ":" in value else None


def _proto(value: str, quoted: bool) -> bytes | None:
    """A name, quoted or not, or (unquoted) a number."""
    proto = int(value) if value.isdigit() and not quoted else PROTOCOLS.get(value)
    return bytes((proto,)) if proto is not None and proto < 256 else None


def _service(value: str, quoted: bool) -> bytes | None:
    ok = not quoted and value.isdigit() and int(value) < 65536
    return int(value).to_bytes(2, "big") if ok else None


def _ether(value: str, quoted: bool) -> bytes | None:
    parts = value.split(":")
    if quoted or len(parts) != 6 or any(len(p) != 2 for p in parts):
        return None
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        return None


def _integer(value: str, quoted: bool) -> bytes | None:
    """A 64-bit raw payload field, as nft lists it (``0x…``), in network byte order."""
    try:
        number = int(value, 16) if not quoted and value.startswith("0x") else -1
    except ValueError:
        return None
    return number.to_bytes(8, "big") if 0 <= number < 1 << 64 else None


_ENCODERS = {
    "integer": _integer,
    "ifname": _ifname,
    "ipv4_addr": _ipv4,
    "ipv6_addr": _ipv6,
    "inet_proto": _proto,
    "inet_service": _service,
    "ether_addr": _ether,
}
"""nft datatype name -> (value, quoted) -> its bytes, or None for a value nft must read"""


def encode_key(ids: list[int], fields: list[str]) -> bytes:
    if len(ids) != len(fields):
        raise Unsupported("field count")
    if len(ids) == 1:
        return encode_field(ids[0], fields[0])
    out = b""
    for kind, text in zip(ids, fields, strict=True):
        raw = encode_field(kind, text)
        out += raw + bytes(-len(raw) % 4)
    return out


# -- netlink ------------------------------------------------------------------------------
def attr(kind: int, value: bytes) -> bytes:
    head = (4 + len(value)).to_bytes(2, "little") + kind.to_bytes(2, "little")
    return head + value + bytes(-len(value) % 4)


def nested(kind: int, value: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, value)


def strz(text: str) -> bytes:
    return text.encode() + b"\0"


def message(kind: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    """nlmsghdr + nfgenmsg (version 0, res_id big-endian) + attributes."""
    head = (20 + len(body)).to_bytes(4, "little") + kind.to_bytes(2, "little")
    head += flags.to_bytes(2, "little") + seq.to_bytes(4, "little") + bytes(4)
    return head + bytes((family, 0)) + res_id.to_bytes(2, "big") + body


def comment_udata(comment: str) -> bytes:
    """libnftnl's user-data TLV (1-byte type, 1-byte length) with the NUL-ended comment."""
    raw = strz(comment)
    if len(raw) > 255:
        raise Unsupported("comment too long")
    return bytes((NFTNL_UDATA_SET_ELEM_COMMENT, len(raw))) + raw


def element(key: bytes, comment: str | None, key_end: bytes | None = None) -> bytes:
    """One element: its key (and, in a concatenated interval set, the range's last key)."""
    body = nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, key))
    if key_end is not None:
        body += nested(NFTA_SET_ELEM_KEY_END, attr(NFTA_DATA_VALUE, key_end))
    if comment is not None:
        body += attr(NFTA_SET_ELEM_USERDATA, comment_udata(comment))
    return nested(NFTA_LIST_ELEM, body)


def setelem_message(verb: str, seq: int, family: int, table: str, name: str, elems: bytes) -> bytes:
    kind = NFT_MSG_NEWSETELEM if verb == "add" else NFT_MSG_DELSETELEM
    flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if verb == "add" else 0)
    body = attr(NFTA_SET_ELEM_LIST_TABLE, strz(table)) + attr(NFTA_SET_ELEM_LIST_SET, strz(name))
    body += nested(NFTA_SET_ELEM_LIST_ELEMENTS, elems)
    return message((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, family, body)


def attrs(data: bytes | memoryview, at: int) -> dict[int, bytes]:
    """Top-level attributes from ``at`` on (types without the nested/byte-order bits)."""
    out: dict[int, bytes] = {}
    while at + 4 <= len(data):
        length = int.from_bytes(data[at : at + 2], "little")
        kind = int.from_bytes(data[at + 2 : at + 4], "little") & 0x3FFF
        if length < 4:
            break
        out[kind] = bytes(data[at + 4 : at + length])
        at += (length + 3) & ~3
    return out


def error_of(msg: bytes | memoryview) -> NftError | None:
    """An NLMSG_ERROR message: None for an ack."""
    error = -int.from_bytes(msg[16:20], "little", signed=True)
    if error == 0:
        return None
    flags = int.from_bytes(msg[6:8], "little")
    text = ""
    if flags & 0x200:  # NLM_F_ACK_TLVS, after the echoed header (NLM_F_CAPPED) or request
        at = 20 + (16 if flags & 0x100 else int.from_bytes(msg[20:24], "little"))
        text = attrs(msg, at).get(1, b"").rstrip(b"\0").decode("utf-8", "replace")
    return NftError(error, text)


def _each(data: bytes | memoryview) -> list[tuple[int, bytes]]:
    """Every attribute in ``data`` in order, repeated types included."""
    out, at = [], 0
    while at + 4 <= len(data):
        length = int.from_bytes(data[at : at + 2], "little")
        if length < 4:
            break
        out.append(
            (
                int.from_bytes(data[at + 2 : at + 4], "little") & 0x3FFF,
                bytes(data[at + 4 : at + length]),
            )
        )
        at += (length + 3) & ~3
    return out


def decode_key(ids: list[int], raw: bytes) -> list[str]:
    """A key's fields as nft writes them (the inverse of :func:`encode_key`)."""
    out, at = [], 0
    for kind in ids:
        size = TYPES[NAMES[kind]][1]
        value = raw[at : at + size]
        at += (size + 3) & ~3 if len(ids) > 1 else size
        name = NAMES[kind]
        if name == "ipv4_addr":
            out.append(_socket.inet_ntoa(value))
        elif name == "ipv6_addr":
            out.append(_socket.inet_ntop(AF_INET6, value))
        elif name == "integer":
            out.append(hex(int.from_bytes(value, "big")))
        elif name == "inet_proto":
            out.append(next((k for k, v in PROTOCOLS.items() if v == value[0]), str(value[0])))
        elif name == "inet_service":
            out.append(str(int.from_bytes(value, "big")))
        elif name == "ifname":
            out.append('"' + value.rstrip(b"\0").decode() + '"')
        else:
            out.append(":".join(f"{b:02x}" for b in value))
    return out


def _range(fields: list[str]) -> tuple[list[str], list[str]]:
    """An interval element's fields as its first and last key: ``10.0.0.0/8`` is 10.0.0.0
    to 10.255.255.255; a plain value is a range of one."""
    lo, hi = [], []
    for f in fields:
        if "/" in f and not f.startswith('"'):
            addr, _, bits = f.partition("/")
            if not bits.isdigit() or int(bits) > 32:
                raise Unsupported(f"value {f!r}")
            start = int.from_bytes(encode_field(TYPES["ipv4_addr"][0], addr), "big")
            size = 1 << (32 - int(bits))
            if start % size:
                raise Unsupported(f"value {f!r}")  # host bits set: nft's to refuse
            lo.append(addr)
            hi.append(_socket.inet_ntoa((start + size - 1).to_bytes(4, "big")))
        else:
            lo.append(f)
            hi.append(f)
    return lo, hi


def _comment(msg: bytes | memoryview) -> str:
    """The comment of the (one) element in a NEWSETELEM message, "" for none."""
    elems = attrs(msg, 20).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
    elem = attrs(elems, 0).get(NFTA_LIST_ELEM, b"")
    udata = attrs(elem, 0).get(NFTA_SET_ELEM_USERDATA, b"")
    at = 0
    while at + 2 <= len(udata):
        kind, length = udata[at], udata[at + 1]
        if kind == NFTNL_UDATA_SET_ELEM_COMMENT:
            return bytes(udata[at + 2 : at + 2 + length]).rstrip(b"\0").decode("utf-8", "replace")
        at += 2 + length
    return ""


NFT_SET_INTERVAL, NFT_SET_CONCAT = 0x4, 0x80


class SetInfo:
    __slots__ = ("ktype", "klen", "plain", "counted", "interval")

    def __init__(
        self, ktype: int, klen: int, plain: bool, counted: bool = False, interval: bool = False
    ) -> None:
        self.ktype = ktype
        self.klen = klen
        self.interval = interval
        """``flags interval``: its declaration is checked, but elements of such a set are
        left to ``nft`` (an interval element is a range of keys, not one key)"""
        self.plain = plain
        """no flags beyond what a plain ``set x { type T; }`` gets, no data or timeout: what a
        re-declaration by ``nft`` would accept"""
        self.counted = counted
        """the set has an expression for its elements (``set x { type T; counter; }``): the
        kernel gives every element added without one its own copy"""


class Nftnl(Channel):
    """One NETLINK_NETFILTER socket, opened on first use (in that namespace)."""

    PROTOCOL = NETLINK_NETFILTER

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _replies(self, last: int):
        """Messages from the socket up to and including the answer to sequence ``last``
        (yields (type, seq, message)); answers come in the order of the requests."""
        sock = self._socket()
        while True:
            data = memoryview(sock.recv(1 << 16))
            at = 0
            while at + 16 <= len(data):
                length = int.from_bytes(data[at : at + 4], "little")
                if length < 16:
                    break
                msg = data[at : at + length]
                at += (length + 3) & ~3
                kind = int.from_bytes(msg[4:6], "little")
                seq = int.from_bytes(msg[8:12], "little")
                yield kind, seq, msg
                multi = int.from_bytes(msg[6:8], "little") & NLM_F_MULTI
                if seq == last and (kind in (NLMSG_ERROR, NLMSG_DONE) or not multi):
                    return

    def _info(self, family: str, table: str, name: str) -> SetInfo | None:
        """Set or map ``name`` of the table; None when either is missing."""
        return self.sets(family, table, [name]).get(name)

    def comment_of(self, family: str, table: str, name: str, fields: list[str]) -> str | None:
        """The comment of the element of set or map ``name`` whose key is ``fields`` (as nft
        writes them: ``["tcp", "8080"]``), "" for one without; None when there is none (or
        no such table or set). One exact lookup in the kernel, whatever the set's size."""
        info = self._info(family, table, name)
        if info is None:
            return None
        key = encode_key(field_ids(info.ktype), fields)
        body = attr(NFTA_SET_ELEM_LIST_TABLE, strz(table)) + attr(
            NFTA_SET_ELEM_LIST_SET, strz(name)
        )
        body += nested(NFTA_SET_ELEM_LIST_ELEMENTS, element(key, None))
        seq = self._next()
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM
        self._socket().send(message(kind, NLM_F_REQUEST | NLM_F_ACK, seq, FAMILIES[family], body))
        found: str | None = None
        for got_kind, got, msg in self._replies(seq):
            if got != seq:
                continue
            if got_kind == NLMSG_ERROR:
                error = error_of(msg)
                if error is not None:
                    if error.errno == 2:
                        return None
                    raise error
            elif got_kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM:
                found = _comment(msg)
        return found

    def keys_of(self, family: str, table: str, name: str) -> list[tuple[list[str], str]]:
        """Every element's key fields (as nft writes them) and comment, of set or map
        ``name`` (one dump of that set alone); empty when there is no such table or set."""
        info = self._info(family, table, name)
        if info is None:
            return []
        ids = field_ids(info.ktype)
        seq = self._next()
        body = attr(NFTA_SET_ELEM_LIST_TABLE, strz(table)) + attr(
            NFTA_SET_ELEM_LIST_SET, strz(name)
        )
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM
        self._socket().send(message(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, FAMILIES[family], body))
        out: list[tuple[list[str], str]] = []
        for got_kind, got, msg in self._replies(seq):
            if got != seq or got_kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM:
                continue
            for _, elem in _each(attrs(msg, 20).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")):
                parts = attrs(elem, 0)
                key = attrs(parts.get(NFTA_SET_ELEM_KEY, b""), 0).get(NFTA_DATA_VALUE, b"")
                wrapped = attr(NFTA_SET_ELEM_LIST_ELEMENTS, attr(NFTA_LIST_ELEM, elem))
                out.append((decode_key(ids, key), _comment(bytes(20) + wrapped)))
        return out

    def sets(self, family: str, table: str, names: list[str]) -> dict[str, SetInfo]:
        """The sets (and maps) ``names`` of the table, asked for one by one in one send; a
        name the table lacks, or a missing table, is left out. A transaction's few sets cost
        the same whatever else the table declares (a dump of its 144 sets cost the daemon
        ~1 ms a VM)."""
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSET
        seqs, data = set(), b""
        for name in dict.fromkeys(names):
            seqs.add(self._next())
            body = attr(NFTA_SET_TABLE, strz(table)) + attr(NFTA_SET_NAME, strz(name))
            data += message(kind, NLM_F_REQUEST, self.seq, FAMILIES[family], body)
        if not seqs:
            return {}
        self._socket().send(data)
        out: dict[str, SetInfo] = {}
        for kind, _seq, msg in self._replies_to(seqs):  # (an error: a name not there)
            if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET:
                a = attrs(msg, 20)
                flags = int.from_bytes(a.get(NFTA_SET_FLAGS, bytes(4)), "big")
                interval = bool(flags & NFT_SET_INTERVAL)
                rest = flags & ~(NFT_SET_INTERVAL | NFT_SET_CONCAT) if interval else flags
                plain = not rest & 0x7F and not any(
                    k in a for k in (NFTA_SET_DATA_TYPE, NFTA_SET_TIMEOUT)
                )
                counted = NFTA_SET_EXPR in a or NFTA_SET_EXPRESSIONS in a
                name = a.get(NFTA_SET_NAME, b"").rstrip(b"\0").decode()
                ktype = int.from_bytes(a.get(NFTA_SET_KEY_TYPE, bytes(4)), "big")
                klen = int.from_bytes(a.get(NFTA_SET_KEY_LEN, bytes(4)), "big")
                out[name] = SetInfo(ktype, klen, plain, counted, interval)
        return out

    def _replies_to(self, seqs: set[int]):
        """The messages answering the requests ``seqs`` (sent in that order, each ending in
        an error/ack, a done, or a single answer): yields (type, seq, message)."""
        for kind, got, msg in self._replies(max(seqs)):
            if got in seqs:
                yield kind, got, msg

    def build(self, tables: Sequence[tuple[Ops, dict[str, SetInfo]]]) -> tuple[bytes, list[int]]:
        """One batch for each table's ``ops`` against its ``sets``, and the sequence numbers
        that must be acknowledged; Unsupported when a declared set differs or a value cannot
        be encoded."""
        batch = [
            message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, self._next(), 0, b"", NFNL_SUBSYS_NFTABLES)
        ]
        seqs: list[int] = []
        for ops, sets in tables:
            batch += self._messages(ops, sets, seqs)
        batch.append(
            message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self._next(), 0, b"", NFNL_SUBSYS_NFTABLES)
        )
        data = b"".join(batch)
        if len(data) > MAX_BATCH:
            raise Unsupported("batch too large")
        return data, seqs

    def _messages(self, ops: Ops, sets: dict[str, SetInfo], seqs: list[int]) -> list[bytes]:
        """The element messages of one table's ``ops`` (their sequence numbers appended to
        ``seqs``), its declared sets checked against the kernel's ``sets``."""
        for name, declared in (ops.declared or {}).items():
            type_text, _, extra = declared.partition(";")  # "ifname; counter"
            extra = extra.strip()
            if extra not in ("", "counter", "flags interval"):
                raise Unsupported(f'set "{name}" declared with {extra!r}')
            ktype, klen, _ = key_type(type_text.strip())
            have = sets.get(name)
            if (
                have is None
                or not have.plain
                or have.counted != (extra == "counter")
                or have.interval != (extra == "flags interval")
                or (have.ktype, have.klen) != (ktype, klen)
            ):
                raise Unsupported(f'set "{name}" is missing or differs from its declaration')
        for name in ops.maps:
            if name not in sets or sets[name].plain:
                raise Unsupported(f'map "{name}" is missing')
        family = FAMILIES[ops.family]
        batch = []
        for verb, name, elems in ops.ops:
            have = sets.get(name)
            if have is None or not have.plain:
                raise Unsupported(f'set "{name}"')
            ids = field_ids(have.ktype)
            if any(k not in NAMES for k in ids):
                raise Unsupported(f'set "{name}" type {have.ktype}')
            if have.interval:  # ranges of a concatenation: first and last key of each
                if len(ids) < 2:
                    raise Unsupported(f'interval set "{name}" of one field')
                body = b"".join(
                    element(encode_key(ids, lo), c, encode_key(ids, hi))
                    for lo, hi, c in (_range(f) + (c,) for f, c in elems)
                )
            else:
                body = b"".join(element(encode_key(ids, f), c) for f, c in elems)
            seqs.append(self._next())
            batch.append(setelem_message(verb, seqs[-1], family, ops.table, name, body))
        return batch

    def run_steps(self, steps: Sequence[Any]) -> None:
        """Apply a group of ``nft`` steps from their element operations (:func:`of_steps`);
        Unsupported or NftError (nothing changed) when the caller must run ``nft -f -``."""
        tables = of_steps(steps)
        if tables is None:
            raise Unsupported("not only set elements")
        self.apply(tables)

    def apply(self, tables: Sequence[Ops]) -> None:
        """Apply the element operations of one or more tables in one batch, as :meth:`run`."""
        checked = []
        for ops in tables:
            names = [*(ops.declared or {}), *ops.maps, *(name for _, name, _ in ops.ops)]
            checked.append((ops, self.sets(ops.family, ops.table, names)))
        data, seqs = self.build(checked)
        sock = self._socket()
        sock.send(data)
        # the kernel handles a batch inside send(); a generation request after it is
        # answered after every answer to the batch, so it marks the end of them
        sentinel = self._next()
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        sock.send(message(kind, NLM_F_REQUEST, sentinel, 0, b""))
        acked: set[int] = set()
        failure: NftError | None = None
        for kind, seq, msg in self._replies(sentinel):
            if kind == NLMSG_ERROR and seq != sentinel:
                error = error_of(msg)
                if error is None:
                    acked.add(seq)
                elif failure is None:
                    failure = error
        if failure is not None:
            raise failure
        if acked != set(seqs):
            raise NftError(5, "batch not acknowledged")  # EIO: not known to have applied
