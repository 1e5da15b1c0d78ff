"""The kinds of kernel object fireroute wants: each is keyed, tagged with its owner, and prints
its own command line (the exact text of an ``ip`` batch line or a sysctl ``key=value``).

Plain slotted classes rather than dataclasses: the per-VM command imports this module, and
dataclasses (with inspect) costs start-up there. Two objects are equal when their keys and
compared attributes are; ``owner`` (the ``<state id>:<vm>`` tag) and ``vm`` (the name error
messages speak of) are not compared.
"""

from __future__ import annotations

LINK_GROUP = 4151
"""Interface group of every link fireroute creates: ``ip link del group`` removes many at once."""
DOOMED_GROUP = 4152
"""Links about to be deleted together are moved here first (only ever by fireroute)."""
FORWARD_KEY = "net.ipv4.ip_forward"
FORWARD6_KEY = "net.ipv6.conf.all.forwarding"
CALLER = "$$"
"""in an ``ip`` line run inside another namespace, ``netns $$`` names the caller's own
namespace (the shell's, when a person types it; the executor's process, when it runs)"""


class Obj:
    """``ns``: None (the root namespace), a namespace's name or a CNI netns path."""

    __slots__ = ("ns", "owner", "vm")
    kind = ""

    def __init__(self, ns: str | None, owner: str, vm: str | None) -> None:
        self.ns = ns
        self.owner = owner
        self.vm = vm

    @property
    def key(self) -> tuple:
        raise NotImplementedError

    @property
    def attrs(self) -> tuple:
        return ()

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and self.key == other.key  # type: ignore[attr-defined]
            and self.attrs == other.attrs  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.key + self.attrs}"

    def text(self, verb: str) -> str:
        """The command line that does ``verb`` (create, set, delete) to it."""
        raise NotImplementedError

    def what(self, verb: str) -> str:
        """The same action in words, for error messages."""
        raise NotImplementedError


def user_args(uid: int, gid: int | None) -> str:
    """`` user UID [group GID]``: a tap's owner, as ``ip tuntap add`` takes it."""
    return f" user {uid}" + (f" group {gid}" if gid is not None else "")


class Link(Obj):
    """A link fireroute makes or sets: ``link_kind`` tun (a tap, owned by ``uid``/``gid``),
    veth (made with its ``peer``, (namespace, name)) or loopback; ``master`` the bridge it is
    a port of; ``alias`` its owner tag as the kernel holds it (ifalias); ``mac`` and ``mtu``
    when fireroute fixes them (a CNI attachment's links; a bridge's MAC), ``peer_mac`` the
    MAC a veth's far end is made with. ``made`` is False for a link that exists without an
    add line of its own (lo, the far end of a veth). ``addrgen`` ("none"): the link's IPv6
    address generation mode, set in the line that brings it up, so the kernel never makes a
    link-local address of its own on it (a CNI host end with IPv6, which has carrier once
    up); printed, not compared
    (its ``addr_gen_mode`` sysctl is the compared object)."""

    __slots__ = (
        *("name", "link_kind", "uid", "gid", "master", "alias", "group", "up", "peer"),
        *("made", "mac", "mtu", "peer_mac", "addrgen"),
    )
    kind = "link"

    def __init__(
        self,
        name: str,
        link_kind: str,
        owner: str,
        vm: str | None,
        alias: str,
        ns: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        master: str | None = None,
        group: int | None = LINK_GROUP,
        up: bool = True,
        peer: tuple[str | None, str] | None = None,
        made: bool = True,
        mac: str | None = None,
        mtu: int | None = None,
        peer_mac: str | None = None,
        addrgen: str | None = None,
    ) -> None:
        super().__init__(ns, owner, vm)
        self.name = name
        self.link_kind = link_kind
        self.uid = uid
        self.gid = gid
        self.master = master
        self.alias = alias
        self.group = group
        self.up = up
        self.peer = peer
        self.made = made
        self.mac = mac
        self.mtu = mtu
        self.peer_mac = peer_mac
        self.addrgen = addrgen

    @property
    def key(self) -> tuple:
        return (self.ns, self.name)

    @property
    def attrs(self) -> tuple:
        return (
            self.link_kind,
            self.peer,
            self.uid,
            self.gid,
            self.master,
            self.group,
            self.alias,
            self.up,
            self.mac,
            self.mtu,
        )

    @property
    def noun(self) -> str:
        return "tap" if self.link_kind == "tun" else self.link_kind

    def text(self, verb: str) -> str:
        """``create``: the add line (a veth's with both ends' MACs, if fixed; a bridge's with
        its MAC); ``set``: master, MTU, a tap's or a bridge's MAC, group, alias, up;
        ``delete``."""
        if verb == "create" and self.link_kind == "veth":
            assert self.peer is not None
            at = self.peer[0] or (CALLER if self.ns else None)  # made in a namespace: $$ is root
            return (
                f"link add {self.name}{_mac(self.mac)} type veth peer name {self.peer[1]}"
                f"{_mac(self.peer_mac)}" + (f" netns {at}" if at else "")
            )
        if verb == "create" and self.link_kind == "bridge":
            return f"link add name {self.name}{_mac(self.mac)} type bridge"
        if verb == "create":
            assert self.link_kind == "tun" and self.uid is not None
            return f"tuntap add dev {self.name} mode tap{user_args(self.uid, self.gid)}"
        if verb == "delete":
            return f"link del dev {self.name}"
        master = f" master {self.master}" if self.master else ""
        master += f" mtu {self.mtu}" if self.mtu else ""
        master += _mac(self.mac) if self.link_kind in ("tun", "bridge") else ""  # (a veth's: made)
        group = f" group {self.group}" if self.group is not None else ""
        alias = f" alias {self.alias}" if self.alias else ""
        alias += f" addrgenmode {self.addrgen}" if self.addrgen else ""
        return f"link set dev {self.name}{master}{group}{alias}" + (" up" if self.up else "")

    def what(self, verb: str) -> str:
        """The action, for error messages."""
        if verb == "set" and self.master:
            return f'attach {self.noun} "{self.name}" to "{self.master}"'
        word = {"create": "create", "delete": "delete"}.get(verb, "bring up")
        return f'{word} {self.noun} "{self.name}"'


def _mac(mac: str | None) -> str:
    return f" address {mac}" if mac else ""


class Addr(Obj):
    """An address (``cidr`` as ``ip address`` prints it: ``172.16.0.1/30``, ``fe80::1/64``) on
    a link; ``nodad``: an IPv6 one usable at once (no duplicate address detection)."""

    __slots__ = ("dev", "cidr", "noun", "nodad")
    kind = "addr"

    def __init__(self, link: Link, cidr: str, nodad: bool = False) -> None:
        super().__init__(link.ns, link.owner, link.vm)
        self.dev = link.name
        self.cidr = cidr
        self.noun = link.noun
        self.nodad = nodad

    @property
    def key(self) -> tuple:
        return (self.ns, self.dev, self.cidr)

    def text(self, verb: str) -> str:
        if verb != "create":
            return f"address del {self.cidr} dev {self.dev}"
        return f"address add {self.cidr} dev {self.dev}" + (" nodad" if self.nodad else "")

    def what(self, verb: str) -> str:
        return f'address {self.noun} "{self.dev}"'


class Sysctl(Obj):
    """A sysctl (``path`` in the slash form, ``net/ipv6/conf/fr-a/disable_ipv6``), which a
    per-device one shares the life of its device."""

    __slots__ = ("path", "value", "words")
    kind = "sysctl"

    def __init__(
        self, path: str, value: str, words: str, owner: str, vm: str | None, ns: str | None = None
    ) -> None:
        super().__init__(ns, owner, vm)
        self.path = path
        self.value = value
        self.words = words

    @property
    def key(self) -> tuple:
        return (self.ns, self.path)

    @property
    def attrs(self) -> tuple:
        return (self.value,)

    def text(self, verb: str = "set") -> str:
        return f"{self.path}={self.value}"

    def what(self, verb: str = "set") -> str:
        return self.words


class Forwarding(Obj):
    """Forwarding in the root namespace (IPv4's, or IPv6's: ``path``), which every state
    file's VMs share: ``value`` as wanted (or read), ``before`` the value fireroute found
    before it switched it on (as recorded; not compared). Leaving it goes back to ``before``."""

    __slots__ = ("value", "before", "path")
    kind = "forwarding"

    def __init__(
        self, value: str, before: str | None = None, owner: str = "", path: str = FORWARD_KEY
    ) -> None:
        super().__init__(None, owner, None)
        self.value = value
        self.before = before
        self.path = path

    @property
    def key(self) -> tuple:
        return (None, self.path)

    @property
    def attrs(self) -> tuple:
        return (self.value,)

    def text(self, verb: str = "set") -> str:
        """``set``/``create``: the value; ``delete``: back to ``before``."""
        return f"{self.path}={self.before if verb == 'delete' else self.value}"

    def what(self, verb: str = "set") -> str:
        family = "IPv4" if self.path == FORWARD_KEY else "IPv6"
        return f"{'restore' if verb == 'delete' else 'set'} {family} forwarding"


PROXY_NDP = "net/ipv6/conf/{}/proxy_ndp"
"""the uplink's proxy NDP switch (a per-device sysctl; the slash form)"""


class NeighProxy(Obj):
    """A neighbour proxy entry (``ip -6 neigh add proxy ADDR dev DEV``): the host answers
    neighbour solicitations for ``addr`` on ``dev`` (a ``--proxy-ndp`` guest's address on
    the uplink, while the uplink's ``proxy_ndp`` is 1)."""

    __slots__ = ("dev", "addr")
    kind = "neigh proxy"

    def __init__(self, dev: str, addr: str, owner: str, vm: str | None) -> None:
        super().__init__(None, owner, vm)
        self.dev = dev
        self.addr = addr

    @property
    def key(self) -> tuple:
        return (self.ns, self.dev, self.addr)

    def text(self, verb: str = "create") -> str:
        return f"neigh {'add' if verb == 'create' else 'del'} proxy {self.addr} dev {self.dev}"

    def what(self, verb: str = "create") -> str:
        word = "answer" if verb == "create" else "stop answering"
        return f'{word} neighbour solicitations for {self.addr} on "{self.dev}"'


def proxy_ndp(dev: str, owner: str, vm: str | None) -> Sysctl:
    """The uplink ``dev``'s ``proxy_ndp=1``, wanted while a ``--proxy-ndp`` VM uses it."""
    words = f'answer neighbour solicitations for proxied addresses on "{dev}"'
    return Sysctl(PROXY_NDP.format(dev), "1", words, owner, vm)
