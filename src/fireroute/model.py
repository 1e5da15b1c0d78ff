"""Validated, immutable values: what a caller asks for and what a VM holds.

Nothing here touches the host. Construction validates, so a value that exists is usable.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network

from fireroute.errors import UsageError

VM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TABLE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
IFNAMSIZ = 15
BACKENDS = ("nft", "iptables")
MODES = ("nat",)


def check_vm_name(name: str) -> str:
    if not VM_NAME_RE.fullmatch(name):
        raise UsageError(
            f'invalid vm name "{name}": use 1-63 of A-Z a-z 0-9 . _ -, starting with a letter '
            "or digit"
        )
    return name


def check_ifname(name: str, what: str = "tap name") -> str:
    if len(name.encode()) > IFNAMSIZ:
        raise UsageError(f'{what} "{name}" is {len(name.encode())} bytes; Linux allows 15')
    if not IFNAME_RE.fullmatch(name):
        raise UsageError(
            f'invalid {what} "{name}": use A-Z a-z 0-9 . _ -, starting with a letter or digit'
        )
    return name


def check_table(name: str) -> str:
    if not TABLE_RE.fullmatch(name):
        raise UsageError(
            f'invalid table name "{name}": use up to 32 of A-Z a-z 0-9 _ -, starting with a letter'
        )
    return name


def check_mac(mac: str) -> str:
    if not MAC_RE.fullmatch(mac):
        raise UsageError(f'invalid MAC "{mac}": expected six hex pairs like 06:00:AC:10:00:02')
    first = int(mac[:2], 16)
    if first & 1:
        raise UsageError(f'invalid MAC "{mac}": a multicast address cannot be a guest MAC')
    return mac.upper()


class Owner:
    """uid[:gid] that may open the tap (a jailed, unprivileged Firecracker)."""

    __slots__ = ("uid", "gid")

    def __init__(self, uid: int, gid: int | None = None) -> None:
        self.uid = uid
        self.gid = gid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Owner) and (self.uid, self.gid) == (other.uid, other.gid)

    def __hash__(self) -> int:
        return hash((self.uid, self.gid))

    @classmethod
    def parse(cls, text: str) -> Owner:
        uid_s, _, gid_s = text.partition(":")
        try:
            uid = int(uid_s)
            gid = int(gid_s) if gid_s else None
        except ValueError:
            raise UsageError(
                f'invalid --owner "{text}": expected UID or UID:GID (numbers)'
            ) from None
        if uid < 0 or (gid is not None and gid < 0) or uid > 2**32 - 2:
            raise UsageError(f'invalid --owner "{text}": ids must be between 0 and 4294967294')
        return cls(uid, gid)

    def __str__(self) -> str:
        return f"{self.uid}" if self.gid is None else f"{self.uid}:{self.gid}"


class Options:
    """Everything a VM's networking depends on, as requested (None = default/auto).

    Plain slotted class rather than a dataclass: the per-VM command imports this module, and
    dataclasses (with inspect) costs ~10 ms of start-up there.
    """

    __slots__ = (
        "backend",
        "pool",
        "prefix",
        "uplink",
        "table",
        "tap",
        "dns",
        "owner",
        "mac",
        "guest_iface",
        "iface_id",
    )

    def __init__(
        self,
        backend: str = "nft",
        pool: IPv4Network | None = None,
        prefix: int = 30,
        uplink: str | None = None,
        table: str = "firecracker",
        tap: str | None = None,
        dns: tuple[IPv4Address, ...] = (),
        owner: Owner | None = None,
        mac: str | None = None,
        guest_iface: str = "eth0",
        iface_id: str = "eth0",
    ) -> None:
        self.backend = backend
        self.pool = pool if pool is not None else IPv4Network("172.16.0.0/16")
        self.prefix = prefix
        self.uplink = uplink
        self.table = table
        self.tap = tap
        self.dns = tuple(dns)
        self.owner = owner
        self.mac = mac
        self.guest_iface = guest_iface
        self.iface_id = iface_id
        self._validate()

    def _validate(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f'unknown backend "{self.backend}": use nft or iptables')
        if not 24 <= self.prefix <= 30:
            raise UsageError(f"invalid block size /{self.prefix}: use /24 to /30")
        if self.pool.prefixlen > self.prefix:
            raise UsageError(
                f"pool {self.pool} is smaller than one /{self.prefix} block; use a larger pool"
            )
        if self.uplink is not None:
            check_ifname(self.uplink, "uplink")
        check_table(self.table)
        if self.tap is not None:
            check_ifname(self.tap)
        if self.mac is not None:
            self.mac = check_mac(self.mac)
        check_ifname(self.guest_iface, "guest interface")
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", self.iface_id):
            raise UsageError(
                f'invalid iface id "{self.iface_id}": use 1-64 of A-Z a-z 0-9 _ (Firecracker\'s '
                "rule)"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Options) and self.identity() == other.identity()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.identity().items())))

    def __repr__(self) -> str:
        return f"Options({self.identity()})"

    def identity(self) -> dict[str, object]:
        """The options that make two requests for the same VM equal (JSON-ready)."""
        return {
            "backend": self.backend,
            "pool": str(self.pool),
            "prefix": self.prefix,
            "uplink": self.uplink,
            "table": self.table,
            "tap": self.tap,
            "dns": [str(d) for d in self.dns],
            "owner": str(self.owner) if self.owner else None,
            "mac": self.mac,
            "guest_iface": self.guest_iface,
            "iface_id": self.iface_id,
        }

    @classmethod
    def from_identity(cls, data: dict[str, object]) -> Options:
        owner = data.get("owner")
        return cls(
            backend=str(data["backend"]),
            pool=IPv4Network(str(data["pool"])),
            prefix=int(str(data["prefix"])),
            uplink=data.get("uplink"),  # type: ignore[arg-type]
            table=str(data["table"]),
            tap=data.get("tap"),  # type: ignore[arg-type]
            dns=tuple(IPv4Address(str(d)) for d in data.get("dns") or ()),  # type: ignore[union-attr]
            owner=Owner.parse(str(owner)) if owner else None,
            mac=data.get("mac"),  # type: ignore[arg-type]
            guest_iface=str(data.get("guest_iface", "eth0")),
            iface_id=str(data.get("iface_id", "eth0")),
        )


class Vm:
    """One VM's host networking as recorded: its block, tap, MAC and the options behind them."""

    __slots__ = ("name", "net", "tap", "mac", "uplink", "options", "state")

    def __init__(
        self,
        name: str,
        net: IPv4Network,
        tap: str,
        mac: str,
        uplink: str,
        options: Options,
        state: str = "active",
    ) -> None:
        self.name = name
        self.net = net
        self.tap = tap
        self.mac = mac
        self.uplink = uplink
        self.options = options
        self.state = state

    def with_state(self, state: str) -> Vm:
        return Vm(self.name, self.net, self.tap, self.mac, self.uplink, self.options, state)

    def __repr__(self) -> str:
        return f"Vm({self.name!r}, {self.net}, tap={self.tap!r}, state={self.state!r})"

    @property
    def tap_ip(self) -> IPv4Address:
        return self.net.network_address + 1

    @property
    def guest_ip(self) -> IPv4Address:
        return self.net.network_address + 2

    @property
    def mask(self) -> IPv4Address:
        return self.net.netmask

    @property
    def backend(self) -> str:
        return self.options.backend

    @property
    def table(self) -> str:
        return self.options.table
