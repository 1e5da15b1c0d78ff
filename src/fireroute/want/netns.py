"""A namespace fireroute makes, routes (in it, or on the host towards it), and the tc redirects
joining two links in one: kinds only modes with a namespace need, kept apart so a NAT VM's
command does without them."""

from __future__ import annotations

from fireroute.want.objects import Obj


class Netns(Obj):
    """A network namespace fireroute makes (a clone's): everything inside goes with it."""

    __slots__ = ("name",)
    kind = "netns"

    def __init__(self, name: str, owner: str, vm: str | None) -> None:
        super().__init__(None, owner, vm)
        self.name = name

    @property
    def key(self) -> tuple:
        return (self.name,)

    def text(self, verb: str) -> str:
        return f"netns {'add' if verb == 'create' else 'del'} {self.name}"

    def what(self, verb: str) -> str:
        return f'{verb} namespace "{self.name}"'


MATCH_ALL = "protocol all u32 match u32 0 0"
"""a u32 filter matching every frame (cls_u32 is in every kernel that has tc at all; matchall
is not always built)"""


class Route(Obj):
    """A route: ``dst`` (``default`` or a CIDR) via ``via`` (if given: else ``dev`` is the
    link it is on) out of ``dev`` (if given), in the main table or ``table`` (``local``: one
    of the kernel's own, which only a down names, want/tap.py :func:`kernel_routes6`)."""

    __slots__ = ("dst", "via", "dev", "words", "table")
    kind = "route"

    def __init__(
        self,
        dst: str,
        via: str | None,
        dev: str | None,
        words: str,
        owner: str,
        vm: str | None,
        ns: str | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(ns, owner, vm)
        self.dst = dst
        self.via = via
        self.dev = dev
        self.words = words
        self.table = table

    @property
    def key(self) -> tuple:
        return (self.ns, self.dst)

    @property
    def attrs(self) -> tuple:
        return (self.via, self.dev)

    def text(self, verb: str = "create") -> str:
        return f"route {'add' if verb == 'create' else 'del'} {self.dst}{self._rest()}"

    def _rest(self) -> str:
        via = f" via {self.via}" if self.via else ""
        table = f" table {self.table}" if self.table else ""
        return via + (f" dev {self.dev}" if self.dev else "") + table

    def what(self, verb: str = "create") -> str:
        return self.words

    def shown(self) -> str:
        """``DST[ via GATEWAY] dev DEV`` as ``ip -j route`` reports it (a /32 as the address):
        the form repair's reader keeps a route in."""
        return self.dst.removesuffix("/32") + self._rest()


class TcRedirect(Obj):
    """Every frame arriving on ``src`` leaves on ``dst``: an ingress qdisc on ``src`` and a
    match-all filter with a mirred redirect (two ``tc`` lines)."""

    __slots__ = ("src", "dst")
    kind = "tc redirect"

    def __init__(self, src: str, dst: str, owner: str, vm: str | None, ns: str | None) -> None:
        super().__init__(ns, owner, vm)
        self.src = src
        self.dst = dst

    @property
    def key(self) -> tuple:
        return (self.ns, self.src)

    @property
    def attrs(self) -> tuple:
        return (self.dst,)

    def lines(self, verb: str = "create") -> list[str]:
        """``create``: the qdisc, then the filter; ``delete``: the qdisc (the filter goes too)."""
        if verb != "create":
            return [f"qdisc del dev {self.src} ingress"]
        return [
            f"qdisc add dev {self.src} ingress",
            f"filter add dev {self.src} parent ffff: {MATCH_ALL} action mirred egress redirect "
            f"dev {self.dst}",
        ]

    def text(self, verb: str = "create") -> str:
        return "\n".join(self.lines(verb))

    def what(self, verb: str = "create") -> str:
        return f'redirect "{self.src}" to "{self.dst}"'
