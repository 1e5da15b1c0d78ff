"""Validated, immutable values: what a caller asks for and what a VM holds.

Nothing here touches the host. Construction validates, so a value that exists is usable.
"""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

from fireroute.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# character classes instead of regular expressions: ``re`` (with enum) costs ~6 ms of the
# per-VM command's start-up
LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
ALNUM = LETTERS | frozenset("0123456789")
HEX = frozenset("0123456789ABCDEFabcdef")
NAME_CHARS = ALNUM | frozenset("._-")
TABLE_CHARS = ALNUM | frozenset("_-")
ID_CHARS = ALNUM | frozenset("_")


def fits(text: str, first: frozenset[str], rest: frozenset[str], max_len: int) -> bool:
    """``text`` is 1..max_len characters, the first from ``first``, the others from ``rest``."""
    return 0 < len(text) <= max_len and text[0] in first and all(c in rest for c in text[1:])


def is_mac(text: str) -> bool:
    """Six colon-separated pairs of hex digits."""
    pairs = text.split(":")
    return len(pairs) == 6 and all(len(p) == 2 and p[0] in HEX and p[1] in HEX for p in pairs)


IFNAMSIZ = 15
BACKENDS = ("nft", "iptables")
MODES = ("nat", "bridge", "clone", "cni")


READY = "_ready-"
"""the names of a daemon's ready VMs (ready.py): ``_ready-<n>``, which :func:`check_vm_name`
refuses (a name starts with a letter or digit), so no client, CLI user or API caller can give
one"""


def is_ready(name: str) -> bool:
    """Is ``name`` a ready VM's (``_ready-`` and decimal digits)?"""
    n = name[len(READY) :]
    return name.startswith(READY) and 0 < len(n) <= 6 and all(c in "0123456789" for c in n)


def check_vm_name(name: str, ready: bool = False) -> str:
    """A VM's name, or UsageError; ``ready``: a ready VM's name is one too (ready.py)."""
    if ready and is_ready(name):
        return name
    if not fits(name, ALNUM, NAME_CHARS, 63):
        raise UsageError(
            f'invalid vm name "{name}": use 1-63 of A-Z a-z 0-9 . _ -, starting with a letter '
            "or digit"
        )
    return name


def check_ifname(name: str, what: str = "tap name") -> str:
    size = len(name.encode("utf-8", "surrogatepass"))  # argv's undecodable bytes included
    if size > IFNAMSIZ:
        raise UsageError(f'{what} "{name}" is {size} bytes; Linux allows 15')
    if not fits(name, ALNUM, NAME_CHARS, IFNAMSIZ):
        raise UsageError(
            f'invalid {what} "{name}": use A-Z a-z 0-9 . _ -, starting with a letter or digit'
        )
    return name


def check_table(name: str) -> str:
    if not fits(name, LETTERS, TABLE_CHARS, 32):
        raise UsageError(
            f'invalid table name "{name}": use up to 32 of A-Z a-z 0-9 _ -, starting with a letter'
        )
    return name


def check_mac(mac: str) -> str:
    if not is_mac(mac):
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
            if not uid_s.isascii() or (gid_s and not gid_s.isascii()):
                raise ValueError
            uid = int(uid_s)
            gid = int(gid_s) if gid_s else None
        except ValueError:
            raise UsageError(
                f'invalid --owner "{text}": expected UID or UID:GID (numbers)'
            ) from None
        if not 0 <= uid <= 2**32 - 2 or (gid is not None and not 0 <= gid <= 2**32 - 2):
            raise UsageError(f'invalid --owner "{text}": ids must be between 0 and 4294967294')
        return cls(uid, gid)

    def __str__(self) -> str:
        return f"{self.uid}" if self.gid is None else f"{self.uid}:{self.gid}"


DEFAULT_NAT_POOL = "172.16.0.0/16"
DEFAULT_CLONE_POOL = "10.200.0.0/16"
DEFAULT_CLONE_GUEST = "192.168.241.2/29"
DEFAULT_CLONE_TAP = "vmtap0"
DEFAULT_CLONE_GUEST6 = "fd00:c10::2/64"
"""a clone's IPv6 guest address, the same in every clone's namespace (and on every host: a
snapshot moves between hosts); NAT66 in the namespace maps it to the clone's own"""
DEFAULT_CNI_TAP = "tap0"


def _iface(text: str | None, what: str) -> IPv4Interface | None:
    if text is None:
        return None
    try:
        iface = IPv4Interface(text)
    except ValueError:
        raise UsageError(
            f'invalid {what} "{text}": expected an IPv4 address with prefix, '
            "such as 192.168.1.169/24"
        ) from None
    if "/" not in text:
        raise UsageError(f'invalid {what} "{text}": give the prefix length too (A.B.C.D/N)')
    return iface


def _addr(text: str | None, what: str) -> IPv4Address | None:
    if text is None:
        return None
    try:
        return IPv4Address(text)
    except ValueError:
        raise UsageError(f'invalid {what} "{text}": expected an IPv4 address') from None


EGRESS = ("internet", "public", "none")
NOT_PUBLIC = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
"""what ``--egress public`` keeps a guest from (with the host's own networks)"""
NOT_PUBLIC6 = tuple(
    IPv6Network(n)
    for n in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::ffff:0:0/96",  # IPv4-mapped: the host's own IPv4 stack, private networks included
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translated into private networks
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: IPv4 addresses, private ones included, inside
        "3fff::/20",  # documentation (RFC 9637)
        "fc00::/7",  # unique local (a pool's, another host's private network)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still private)
        "ff00::/8",  # multicast
    )
)
"""the image of :data:`NOT_PUBLIC` for IPv6: what ``--egress public`` keeps a guest with
IPv6 from (with the uplink's own IPv6 networks)"""

Net = IPv4Network | IPv6Network


def merged(nets: tuple[Net, ...] | list) -> tuple[Net, ...]:
    """CIDRs with overlaps merged (nft rejects, or worse, overlapping interval elements), per
    family: the IPv4 ones, then the IPv6 ones."""
    if not nets:  # (most guests: asked for every VM a plan renders)
        return ()
    from ipaddress import collapse_addresses, ip_network

    got = [ip_network(n) if isinstance(n, str) else n for n in nets]
    four = [n for n in got if n.version == 4]
    six = [n for n in got if n.version == 6]
    if len(got) == 1:  # (one network is merged already)
        return tuple(got)
    return (
        *(collapse_addresses(four) if four else ()),  # type: ignore[arg-type,type-var]
        *(collapse_addresses(six) if six else ()),  # type: ignore[arg-type,type-var]
    )


def of_family(nets: tuple[Net, ...], version: int) -> tuple[Net, ...]:
    """The CIDRs of ``nets`` of one IP ``version`` (4 or 6)."""
    return tuple(n for n in nets if n.version == version)


class Published:
    """One published port: the host's ``addr`` (None: every address of the host) ``port`` and
    ``proto``, forwarded to the guest's ``guest_port``. Text: ``[ADDR:]PORT:GUESTPORT/PROTO``,
    an IPv6 ADDR in brackets (``[2001:db8::1]:8080:80``)."""

    __slots__ = ("addr", "port", "guest_port", "proto")

    def __init__(self, addr: str | None, port: int, guest_port: int, proto: str) -> None:
        self.addr, self.port, self.guest_port, self.proto = addr, port, guest_port, proto
        if proto not in ("tcp", "udp"):
            raise UsageError(f'invalid --publish "{self}": the protocol is tcp or udp')
        for n in (port, guest_port):
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 65535:
                raise UsageError(f'invalid --publish "{self}": ports are 1..65535')
        if addr is not None and ":" in addr:
            self.addr = self._v6(addr)
        elif addr is not None:
            a = _addr(addr, "--publish address")
            assert a is not None
            if a.is_multicast or a.is_unspecified or a == IPv4Address("255.255.255.255"):
                raise UsageError(f'invalid --publish "{self}": {a} is no host address')
            if a.is_loopback and a != LOOPBACK:
                raise UsageError(f'invalid --publish "{self}": of loopback, only {LOOPBACK}')
            self.addr = str(a)

    def _v6(self, addr: str) -> str:
        """A host IPv6 address to publish on: one a packet from outside can be sent to."""
        try:
            a = IPv6Address(addr)
        except ValueError:
            raise UsageError(f'invalid --publish "{self}": "{addr}" is no IPv6 address') from None
        if a.is_loopback:  # docs/ipv6-plan.md F8
            raise UsageError(
                f'invalid --publish "{self}": a port on [::1] cannot be forwarded (IPv6 has no '
                "route_localnet); publish on 127.0.0.1 or on a host IPv6 address"
            )
        if a.is_multicast or a.is_unspecified or a.is_link_local or a.ipv4_mapped:
            raise UsageError(f'invalid --publish "{self}": {a} is no host address to publish on')
        return str(a)

    @classmethod
    def parse(cls, text: str) -> Published:
        """``[ADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]`` (tcp when no protocol is given); an IPv6
        ADDR in brackets."""
        spec, _, proto = text.partition("/")
        if spec.startswith("["):  # [IPv6]:HOSTPORT:GUESTPORT
            addr6, close, rest = spec[1:].partition("]")
            parts = [addr6, *rest[1:].split(":")] if close and rest[:1] == ":" else []
        else:
            parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit() for p in parts[-2:]):
            raise UsageError(
                f'invalid --publish "{text}": expected [ADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], '
                "such as 8080:80, 127.0.0.1:2222:22 or [2001:db8::1]:8080:80"
            )
        addr = parts[0] if len(parts) == 3 else None
        return cls(addr, int(parts[-2]), int(parts[-1]), proto or "tcp")

    @property
    def claim(self) -> tuple[str | None, int, str]:
        """What one VM at most may hold: the host address, port and protocol."""
        return (self.addr, self.port, self.proto)

    def __str__(self) -> str:
        at = f"[{self.addr}]:" if self.addr and ":" in self.addr else f"{self.addr}:"
        return f"{at if self.addr else ''}{self.port}:{self.guest_port}/{self.proto}"

    def __iter__(self):  # noqa: ANN204 - (addr, port, guest_port, proto), for Published(*p)
        return iter((self.addr, self.port, self.guest_port, self.proto))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Published) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Published({str(self)!r})"


LOOPBACK = IPv4Address("127.0.0.1")


class Options:
    """Everything a VM's networking depends on, as requested (None = default/auto).

    Plain slotted class rather than a dataclass: the per-VM command imports this module, and
    dataclasses (with inspect) costs ~10 ms of start-up there. Fields by mode:
    nat: pool/prefix; bridge: bridge, bridge_address, guest (fixed IP/prefix) or addr_range or
    dhcp, gateway, masquerade; clone: pool/prefix (for the veth links), guest, tap (inside the
    clone's namespace), clone_address.
    """

    FIELDS = (
        "mode",
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
        "bridge",
        "bridge_address",
        "guest",
        "addr_range",
        "dhcp",
        "gateway",
        "masquerade",
        "clone_address",
        "allow_peers",
        "allow_metadata",
        "allow_host_ports",
        "fix_forward_policy",
        "egress",
        "allow_out",
        "deny_out",
        "host_nets",
        "netns",
        "container",
        "ifname",
        "network",
        "mtu",
        "publish",
        "ipv6",
        "pool6",
        "prefix6",
        "proxy_ndp",
    )
    __slots__ = FIELDS

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
        mode: str = "nat",
        bridge: str | None = None,
        bridge_address: str | None = None,
        guest: str | None = None,
        addr_range: str | None = None,
        dhcp: bool = False,
        gateway: str | None = None,
        masquerade: bool = False,
        clone_address: str | None = None,
        allow_peers: bool = False,
        allow_metadata: bool = False,
        allow_host_ports: tuple[tuple[int, str], ...] | list = (),
        fix_forward_policy: bool = False,
        egress: str = "internet",
        allow_out: tuple[Net, ...] | list = (),
        deny_out: tuple[Net, ...] | list = (),
        host_nets: tuple[Net, ...] | list = (),
        netns: str | None = None,
        container: str | None = None,
        ifname: str | None = None,
        network: str | None = None,
        mtu: int | None = None,
        publish: tuple[Published, ...] | list = (),
        ipv6: bool = False,
        pool6: IPv6Network | None = None,
        prefix6: int = 64,
        proxy_ndp: bool = False,
    ) -> None:
        self.mode = mode
        self.backend = backend
        default_pool = DEFAULT_CLONE_POOL if mode == "clone" else DEFAULT_NAT_POOL
        self.pool = pool if pool is not None else IPv4Network(default_pool)
        self.prefix = prefix
        self.uplink = uplink
        self.table = table
        self.tap = tap
        self.dns = tuple(dict.fromkeys(dns))  # a server given twice is one server
        self.owner = owner
        self.mac = mac
        self.guest_iface = guest_iface
        self.iface_id = iface_id
        self.bridge = bridge
        self.bridge_address = bridge_address
        self.guest = guest
        self.addr_range = addr_range
        self.dhcp = dhcp
        self.gateway = gateway
        self.masquerade = masquerade
        self.clone_address = clone_address
        self.allow_peers = allow_peers
        self.allow_metadata = allow_metadata
        self.allow_host_ports = tuple(  # a port given twice is one port
            dict.fromkeys(tuple(p) for p in allow_host_ports)
        )
        self.fix_forward_policy = fix_forward_policy
        self.egress = egress
        self.allow_out = merged(allow_out)
        self.deny_out = merged(deny_out)
        self.host_nets = merged(host_nets)
        """the uplink's own networks when the VM came up (``--egress public`` keeps the guest
        off them too; its IPv6 ones too for a VM with IPv6): read by up, recorded, so the
        desired state needs no host read"""
        self.netns = netns
        """cni: the path of the network namespace the VMM runs in (the runtime's CNI_NETNS)"""
        self.container = container
        """cni: the runtime's CNI_CONTAINERID"""
        self.ifname = ifname
        """cni: the interface made inside ``netns`` (CNI_IFNAME): the netns end of the veth"""
        self.network = network
        """cni: the network configuration's name"""
        self.mtu = mtu
        self.publish: tuple[Published, ...] = tuple(dict.fromkeys(Published(*p) for p in publish))
        """published ports: host (address, port, protocol) forwarded to the guest's port"""
        self.ipv6 = ipv6
        """dual stack (issue 24): the VM also gets a /64 of ``pool6``"""
        self.pool6 = pool6
        """the IPv6 pool (None: the state file's own, a ULA /48 made once)"""
        self.prefix6 = prefix6
        """the prefix length of the VM's IPv6 block: 64, or 65..126 in a global pool"""
        self.proxy_ndp = proxy_ndp
        """answer neighbour solicitations for the guest's address on the uplink (proxy NDP)"""
        self._validate()

    def _validate(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f'unknown mode "{self.mode}": use nat, bridge, clone or cni')
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
        if not fits(self.iface_id, ID_CHARS, ID_CHARS, 64):
            raise UsageError(
                f'invalid iface id "{self.iface_id}": use 1-64 of A-Z a-z 0-9 _ (Firecracker\'s '
                "rule)"
            )
        self._validate_mode()
        for port, proto in self.allow_host_ports:
            if proto not in ("tcp", "udp") or not 1 <= int(port) <= 65535:
                raise UsageError(
                    f'invalid --allow-host-port "{port}/{proto}": use PORT/tcp or '
                    "PORT/udp with PORT 1-65535"
                )
        if self.backend == "iptables" and self.allow_peers:
            raise UsageError("--allow-peers needs the nft backend")
        self._validate_publish()
        self._validate_egress()
        self._validate_ipv6()

    def _validate_publish(self) -> None:
        """Published ports: nat and cni guests, nft, and no host port taken twice."""
        if not self.publish:
            return
        if self.mode not in ("nat", "cni"):
            raise UsageError("--publish applies to nat and cni guests")
        if self.backend != "nft":
            raise UsageError("--publish needs the nft backend")
        claimed: dict[tuple[str | None, int, str], Published] = {}
        for p in self.publish:
            other = claimed.get(p.claim) or claimed.get((None, p.port, p.proto))
            if other is None and p.addr is None:
                other = next((c for c in claimed.values() if c.claim[1:] == p.claim[1:]), None)
            if other is not None:
                raise UsageError(f'--publish "{p}" takes the host port of "{other}" again')
            claimed[p.claim] = p
            if p.addr is not None and ":" in p.addr and not self.ipv6:
                raise UsageError(
                    f'--publish "{p}" is on a host IPv6 address: it needs --ipv6 (the guest has '
                    "no IPv6 address to forward it to)"
                )

    def _validate_egress(self) -> None:
        if self.egress not in EGRESS:
            raise UsageError(f'invalid --egress "{self.egress}": use internet, public or none')
        policy = self.egress != "internet" or self.allow_out or self.deny_out
        if policy and self.backend == "iptables":
            raise UsageError("--egress, --allow-out and --deny-out need the nft backend")
        if policy and self.mode == "bridge":
            raise UsageError(
                "--egress, --allow-out and --deny-out apply to nat and clone guests (a bridge "
                "guest's traffic may not pass the host at all)"
            )

    def _validate_ipv6(self) -> None:
        if self.pool6 is not None and not self.ipv6:
            raise UsageError(f"--pool6 {self.pool6} needs --ipv6 (it is the pool of v6 blocks)")
        if self.ipv6 and self.backend == "iptables":
            raise UsageError(
                "--ipv6 needs the nft backend: the iptables backend has no IPv6 rules; "
                "use --backend nft"
            )
        if self.ipv6 and self.dhcp:
            raise UsageError("--ipv6 needs a known guest address: use --guest-ip or --range")
        self._validate_prefix6()
        if self.pool6 is not None:
            from fireroute.addressing import check_pool6

            check_pool6(self.pool6, prefix=self.prefix6)

    def _validate_prefix6(self) -> None:
        """``--prefix6`` and ``--proxy-ndp`` (docs/ipv6.md, proxy NDP): for a NAT VM with
        IPv6 from a global pool given with ``--pool6`` only."""
        from fireroute.addressing import MAX_PREFIX6, MIN_PREFIX6

        flags = (("--prefix6", self.prefix6 != MIN_PREFIX6), ("--proxy-ndp", self.proxy_ndp))
        given = [f for f, on in flags if on]
        if not isinstance(self.prefix6, int) or not MIN_PREFIX6 <= self.prefix6 <= MAX_PREFIX6:
            raise UsageError(f'invalid --prefix6 "{self.prefix6}": use 64 (default) to 126')
        if not given:
            return
        if not self.ipv6 or self.mode != "nat":
            raise UsageError(f"{given[0]} needs --ipv6 in nat mode")
        from fireroute.addressing import unique_local6

        if self.pool6 is None or unique_local6(self.pool6):
            raise UsageError(
                f"{given[0]} needs a global --pool6 routed to this host (a unique local pool "
                "is masqueraded: its VMs keep their /64 and need no proxy NDP)"
            )

    def _validate_mode(self) -> None:
        """What only some modes take (:data:`APPLIES_TO`), then the mode's own checks
        (:data:`MODE_CHECKS`)."""
        for attr, name, modes, refusal in APPLIES_TO:
            value = getattr(self, attr)
            given = bool(value) if attr in ("dhcp", "masquerade") else value is not None
            if given and self.mode not in modes:
                raise UsageError(refusal.format(name))
        for check in MODE_CHECKS[self.mode]:
            check(self)

    def _no_clone_address(self) -> None:
        if self.clone_address is not None:
            raise UsageError("--clone-address only applies to --mode clone")

    def _validate_nat(self) -> None:
        if self.guest is not None:
            raise UsageError(
                "--guest-ip applies to --mode bridge or clone; NAT guests get the "
                "second address of their block"
            )

    def _validate_bridge(self) -> None:
        if self.bridge is None:
            self.bridge = "br0"
        check_ifname(self.bridge, "bridge name")
        bridge_ip = _iface(self.bridge_address, "--bridge-address")
        guest = _iface(self.guest, "--guest-ip")
        _addr(self.gateway, "--gateway")
        chosen = [x for x in (self.guest, self.addr_range, self.dhcp or None) if x]
        if len(chosen) != 1:
            raise UsageError("bridge mode needs exactly one of --guest-ip, --range, --dhcp")
        if self.dhcp and self.masquerade:
            raise UsageError(
                "--masquerade needs a known guest address: use --guest-ip or "
                "--range instead of --dhcp"
            )
        if self.addr_range is not None:
            self.range_bounds()
        if guest and bridge_ip and guest.network != bridge_ip.network:
            raise UsageError(
                f"--guest-ip {guest} is not in the bridge's subnet {bridge_ip.network}"
            )

    def _validate_clone(self) -> None:
        if self.guest is None:
            self.guest = DEFAULT_CLONE_GUEST
        g = _iface(self.guest, "--guest-ip")
        assert g is not None
        if g.network.prefixlen > 30 or g.ip in (
            g.network.network_address,
            g.network.broadcast_address,
        ):
            raise UsageError(f"--guest-ip {g} leaves no room for the tap address")
        if self.clone_address not in (None, "auto"):
            _addr(self.clone_address, "--clone-address")

    def _validate_mtu(self) -> None:
        if self.mtu is not None and (
            isinstance(self.mtu, bool)
            or not isinstance(self.mtu, int)
            or not 68 <= self.mtu <= 65535
        ):
            raise UsageError(f'invalid mtu "{self.mtu}": use 68..65535')

    def _validate_cni(self) -> None:
        if not self.netns or not self.netns.startswith("/") or "\n" in self.netns:
            raise UsageError(f'invalid netns "{self.netns}": expected an absolute path')
        if not self.container or not fits(self.container, ALNUM, NAME_CHARS, 256):
            raise UsageError(
                f'invalid container id "{self.container}": use A-Z a-z 0-9 . _ -, starting '
                "with a letter or digit"
            )
        check_ifname(self.ifname or "", "ifname")
        if not self.network or not fits(self.network, ALNUM, NAME_CHARS, 128):
            raise UsageError(
                f'invalid network name "{self.network}": use A-Z a-z 0-9 . _ -, starting with '
                "a letter or digit"
            )
        if self.tap is not None and self.tap == self.ifname:
            raise UsageError(f'tapName "{self.tap}" is the same as the ifname')
        if (self.guest is None) != (self.gateway is None):
            raise UsageError("an address from IPAM needs both the guest's address and a gateway")
        if self.guest is not None:
            g = _iface(self.guest, "IPAM address")
            gw = _addr(self.gateway, "IPAM gateway")
            assert g is not None and gw is not None
            if g.network.prefixlen == 32 or gw == g.ip or gw not in g.network:
                raise UsageError(
                    f"IPAM address {g} with gateway {gw}: the gateway must be another address "
                    "of the guest's subnet"
                )

    def range_bounds(self) -> tuple[IPv4Address, IPv4Address]:
        text = self.addr_range or ""
        lo, sep, hi = text.partition("-")
        try:
            a, b = IPv4Address(lo.strip()), IPv4Address(hi.strip())
        except ValueError:
            a = b = None  # type: ignore[assignment]
        if not sep or a is None or b is None or int(b) < int(a):
            raise UsageError(
                f'invalid --range "{text}": expected FIRST-LAST, such as '
                "192.168.1.160-192.168.1.199"
            )
        return a, b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Options) and self.identity() == other.identity()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.identity().items())))

    def __repr__(self) -> str:
        return f"Options({self.identity()})"

    def identity(self) -> dict[str, object]:
        """The options that make two requests for the same VM equal (JSON-ready). Those of
        :data:`OFF_UNLESS_IPV6` only when ``ipv6`` is on: a v4-only VM's text (as the state
        file holds it) is the same as before they existed."""
        out: dict[str, object] = {}
        for f in self.FIELDS:
            if f in OFF_UNLESS_IPV6 and not self.ipv6:
                continue
            v = getattr(self, f)
            if f in OFF_UNLESS_SET and v == OFF_UNLESS_SET[f]:
                continue
            if f in ("pool", "pool6"):
                v = None if v is None else str(v)
            elif f == "dns":
                v = [str(d) for d in v]
            elif f == "owner":
                v = str(v) if v else None
            elif f == "allow_host_ports":
                v = [list(p) for p in v]
            elif f in ("allow_out", "deny_out", "host_nets"):
                v = [str(n) for n in v]
            elif f == "publish":
                v = [str(p) for p in v]
            out[f] = v
        return out

    @classmethod
    def from_identity(cls, data: dict[str, Any]) -> Options:
        """The options of :meth:`identity`'s JSON (as the state file holds it)."""
        kw = {f: data[f] for f in cls.FIELDS if f in data}
        kw["pool"] = IPv4Network(str(kw["pool"])) if kw.get("pool") else None
        kw["dns"] = tuple(IPv4Address(str(d)) for d in kw.get("dns") or ())
        kw["owner"] = Owner.parse(str(kw["owner"])) if kw.get("owner") else None
        for f in ("allow_out", "deny_out", "host_nets"):
            kw[f] = merged(kw.get(f) or ())
        kw["publish"] = tuple(Published.parse(str(p)) for p in kw.get("publish") or ())
        kw["pool6"] = IPv6Network(str(kw["pool6"])) if kw.get("pool6") else None
        return cls(**kw)


OFF_UNLESS_IPV6: dict[str, object] = {"ipv6": False, "pool6": None}
OFF_UNLESS_SET: dict[str, object] = {"prefix6": 64, "proxy_ndp": False}
"""options left out of :meth:`Options.identity` at their default: a VM's text (as the state
file holds it) is the same as before they existed"""
"""the options a v4-only VM's :meth:`Options.identity` leaves out, with the values they have
there"""


BRIDGE_ONLY = "{} only applies to --mode bridge"
CNI_ONLY = "{} only applies to mode cni (the CNI plugin)"
APPLIES_TO = (
    ("bridge", "--bridge", ("bridge",), BRIDGE_ONLY),
    ("bridge_address", "--bridge-address", ("bridge",), BRIDGE_ONLY),
    ("addr_range", "--range", ("bridge",), BRIDGE_ONLY),
    ("dhcp", "--dhcp", ("bridge",), BRIDGE_ONLY),
    ("gateway", "--gateway", ("bridge", "cni"), BRIDGE_ONLY),  # cni: from a delegated IPAM
    ("masquerade", "--masquerade", ("bridge",), BRIDGE_ONLY),
    ("netns", "netns", ("cni",), CNI_ONLY),
    ("container", "container", ("cni",), CNI_ONLY),
    ("ifname", "ifname", ("cni",), CNI_ONLY),
    ("network", "network", ("cni",), CNI_ONLY),
    ("mtu", "mtu", ("cni",), CNI_ONLY),
)
"""(option, its name in the refusal, the modes that take it, the refusal), in the order they
are checked: given (a flag: true) in another mode, the first is refused"""
MODE_CHECKS: dict[str, tuple[Callable[[Options], None], ...]] = {
    "nat": (Options._no_clone_address, Options._validate_nat),
    "bridge": (Options._no_clone_address, Options._validate_bridge),
    "clone": (Options._validate_clone,),
    "cni": (Options._validate_cni, Options._validate_mtu, Options._no_clone_address),
}
"""a mode's own checks, in order (after :data:`APPLIES_TO`)"""


class Vm:
    """One VM's host networking as recorded.

    ``net`` is the leased block: the /30 of a NAT VM, the /30 of a clone's veth link, or the
    /32 of a bridge guest's address (None for DHCP). ``tap`` is the VM's device on the host:
    the tap (nat, bridge) or the host end of the clone's veth pair; the tap Firecracker opens is
    ``vm_tap``. ``net6`` is the leased IPv6 block (a /64) of a VM with ``--ipv6``, None for a
    v4-only VM.
    """

    __slots__ = (
        *("name", "net", "tap", "mac", "uplink", "options", "state", "netns_name", "owner"),
        "net6",
        "own_gateway6",
        "_guest",
        "_guest_ip",
    )

    def __init__(
        self,
        name: str,
        net: IPv4Network | None,
        tap: str,
        mac: str,
        uplink: str,
        options: Options,
        state: str = "active",
        net6: IPv6Network | None = None,
    ) -> None:
        self.name = name
        self.net = net
        self.tap = tap
        self.mac = mac
        self.uplink = uplink
        self.options = options
        self.state = state
        self.net6 = net6
        self.netns_name: str | None = None
        """clone mode: the namespace's name (fireroute-<state id>-<vm>), set at allocation"""
        self.owner = "new"
        """the id of the state file holding the VM: every object made for it is tagged with it"""
        self.own_gateway6 = True
        """a NAT VM with IPv6 has a gateway of its own (:attr:`gateway6_text`); off in a state
        file whose IPv6 leases predate that (state/store.py ``own_gateway6``): they keep
        ``fe80::1``, which their guests were told"""
        self._guest: tuple = ()  # (what guest_iface_addr was worked out from, its value)
        self._guest_ip: tuple[IPv4Interface, IPv4Address] | None = None  # (and its ip)

    def with_state(self, state: str) -> Vm:
        return self.replaced(state=state)

    def replaced(
        self, name: str | None = None, options: Options | None = None, state: str | None = None
    ) -> Vm:
        """This lease with another name, options or state: the same block, devices, MAC,
        owner and gateway (every attribute a lease carries is copied here, and only here)."""
        vm = Vm(
            self.name if name is None else name,
            self.net,
            self.tap,
            self.mac,
            self.uplink,
            self.options if options is None else options,
            self.state if state is None else state,
            self.net6,
        )
        vm.netns_name, vm.owner, vm.own_gateway6 = self.netns_name, self.owner, self.own_gateway6
        return vm

    def __repr__(self) -> str:
        return f"Vm({self.name!r}, {self.net}, tap={self.tap!r}, state={self.state!r})"

    @property
    def tag(self) -> str:
        """``<state id>:<vm>``: the owner tag of every object made for this VM."""
        return f"{self.owner}:{self.name}"

    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def guest_iface_addr(self) -> IPv4Interface | None:
        """The guest's address with its prefix (None for a DHCP guest); worked out once for
        the same block and options (a plan asks for it several times per VM)."""
        o = self.options
        basis = (self.net, o, o.mode, o.guest, o.dhcp, o.bridge_address)
        if self._guest and self._guest[:-1] == basis:
            return self._guest[-1]
        value = self._guest_iface_addr()
        self._guest = (*basis, value)
        return value

    def _guest_iface_addr(self) -> IPv4Interface | None:
        o = self.options
        if o.mode == "nat" or (o.mode == "cni" and o.guest is None):
            assert self.net is not None
            return IPv4Interface(f"{self.net.network_address + 2}/{self.net.prefixlen}")
        if o.guest is not None:
            return IPv4Interface(o.guest)
        if o.dhcp or self.net is None:
            return None
        bridge = IPv4Interface(str(o.bridge_address))
        return IPv4Interface(f"{self.net.network_address}/{bridge.network.prefixlen}")

    @property
    def guest_ip(self) -> IPv4Address | None:
        g = self.guest_iface_addr  # (fills self._guest, the basis it was worked out from)
        if g is None:
            return None
        if self._guest_ip is None or self._guest_ip[0] is not g:  # (its ip: once per value)
            self._guest_ip = (g, g.ip)
        return self._guest_ip[1]

    @property
    def tap_ip(self) -> IPv4Address | None:
        """The guest's gateway: the tap address (nat, clone) or the bridge's (bridge)."""
        o = self.options
        if o.mode == "nat" or (o.mode == "cni" and o.gateway is None):
            assert self.net is not None
            return self.net.network_address + 1
        if o.mode == "clone":
            g = IPv4Interface(str(o.guest))
            return (
                g.network.network_address + 1
                if g.ip != g.network.network_address + 1
                else g.network.network_address + 2
            )
        if o.bridge_address:
            return IPv4Interface(o.bridge_address).ip
        return IPv4Address(o.gateway) if o.gateway else None

    @property
    def guest6(self) -> IPv6Interface | None:
        """The guest's IPv6 address with its prefix: its block's ``::2``/64 (None: v4 only)."""
        if self.net6 is None:
            return None
        if self.options.mode == "clone":  # (the block's ::2 is the clone's address)
            return IPv6Interface(DEFAULT_CLONE_GUEST6)
        from fireroute.addressing import guest6

        return guest6(self.net6)

    @property
    def gateway6(self) -> IPv6Address | None:
        """The guest's IPv6 gateway, the host side of its tap (None: v4 only)."""
        text = self.gateway6_text
        return None if text is None else IPv6Address(text)

    @property
    def gateway6_text(self) -> str | None:
        """:attr:`gateway6` as ``ip address`` prints it: a NAT VM's own
        (addressing.gateway6_text, unless :attr:`own_gateway6` is off), else ``fe80::1``
        (a bridge's, a clone's: the same in every clone, a CNI attachment's)."""
        if self.net6 is None:
            return None
        from fireroute.addressing import gateway6_text

        if self.options.mode == "nat" and self.own_gateway6:
            return gateway6_text(self.net6)
        return "fe80::1"

    @property
    def prefix(self) -> int:
        g = self.guest_iface_addr
        if g is not None:
            return g.network.prefixlen
        return (
            IPv4Interface(self.options.bridge_address).network.prefixlen
            if self.options.bridge_address
            else 24
        )

    @property
    def mask(self) -> IPv4Address:
        return IPv4Network(f"0.0.0.0/{self.prefix}").netmask

    @property
    def vm_tap(self) -> str:
        """The tap Firecracker opens (inside the VM's namespace for clone and cni modes)."""
        if self.options.mode == "clone":
            return self.options.tap or DEFAULT_CLONE_TAP
        if self.options.mode == "cni":
            return self.options.tap or DEFAULT_CNI_TAP
        return self.tap

    @property
    def nat_source(self) -> IPv4Address | None:
        """The source address the host masquerades: the guest's, or the clone veth's."""
        if self.options.mode == "clone":
            from fireroute.addressing import veth_pair

            assert self.net is not None
            return veth_pair(self.net)[1]
        return self.guest_ip

    @property
    def netns(self) -> str | None:
        """The VM's namespace: a clone's (a name under /run/netns, made by fireroute) or a
        CNI attachment's (the runtime's path)."""
        if self.options.mode == "cni":
            return self.options.netns
        if self.options.mode != "clone":
            return None
        return self.netns_name or f"fireroute-new-{self.name}"

    @property
    def delegated(self) -> bool:
        """A CNI attachment whose address came from an IPAM plugin (not from the pool): its
        host veth holds the gateway as a /32 and routes the guest's /32."""
        return self.options.mode == "cni" and self.options.guest is not None

    @property
    def netns_path(self) -> str | None:
        """The VM's namespace as a path (what the jailer's ``--netns`` takes)."""
        ns = self.netns
        if ns is None or ns.startswith("/"):
            return ns
        return f"/var/run/netns/{ns}"

    @property
    def clone_address(self) -> IPv4Address | None:
        if self.options.mode != "clone":
            return None
        ca = self.options.clone_address
        if ca in (None, "auto"):
            return self.nat_source
        return IPv4Address(ca)

    @property
    def backend(self) -> str:
        return self.options.backend

    @property
    def table(self) -> str:
        return self.options.table
