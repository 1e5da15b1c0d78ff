"""A namespace fireroute makes, and routes (in it, or on the host towards it): kinds only
modes with a namespace need, kept apart so a NAT VM's command does without them."""

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


class Route(Obj):
    """An IPv4 route: ``dst`` (``default`` or a CIDR) via ``via`` (out of ``dev``, if given)."""

    __slots__ = ("dst", "via", "dev", "words")
    kind = "route"

    def __init__(
        self,
        dst: str,
        via: str,
        dev: str | None,
        words: str,
        owner: str,
        vm: str | None,
        ns: str | None = None,
    ) -> None:
        super().__init__(ns, owner, vm)
        self.dst = dst
        self.via = via
        self.dev = dev
        self.words = words

    @property
    def key(self) -> tuple:
        return (self.ns, self.dst)

    @property
    def attrs(self) -> tuple:
        return (self.via, self.dev)

    def text(self, verb: str = "create") -> str:
        dev = f" dev {self.dev}" if self.dev else ""
        return f"route {'add' if verb == 'create' else 'del'} {self.dst} via {self.via}{dev}"

    def what(self, verb: str = "create") -> str:
        return self.words

    def shown(self) -> str:
        """``DST via GATEWAY dev DEV`` as ``ip -j route`` reports it (a /32 as the address)."""
        return f"{self.dst.removesuffix('/32')} via {self.via} dev {self.dev}"
