"""nftables tables and chains fireroute wants (a clone namespace's NAT table), printed as the
script that declares them: the text ``nft list`` prints back, so a chain compares as listed."""

from __future__ import annotations

from fireroute.want.objects import Obj


class NftChain(Obj):
    """A base chain: ``header`` (type, hook, priority, policy) and its ``rules`` in order."""

    __slots__ = ("family", "table", "name", "header", "rules")
    kind = "nft chain"

    def __init__(self, table: NftTable, name: str, header: str, rules: tuple[str, ...]) -> None:
        super().__init__(table.ns, table.owner, table.vm)
        self.family = table.family
        self.table = table.name
        self.name = name
        self.header = header
        self.rules = rules

    @property
    def key(self) -> tuple:
        return (self.ns, self.family, self.table, self.name)

    @property
    def attrs(self) -> tuple:
        return (self.header, self.rules)

    def block(self) -> str:
        """The chain inside its table's declaration."""
        rules = "".join(f"    {r}\n" for r in self.rules)
        return f"  chain {self.name} {{ {self.header}\n{rules}  }}\n"


class NftTable(Obj):
    """A table of ours (comment ``fireroute``); ``words`` is the action it is made for."""

    __slots__ = ("family", "name", "words")
    kind = "nft table"

    def __init__(
        self, family: str, name: str, words: str, owner: str, vm: str | None, ns: str | None
    ) -> None:
        super().__init__(ns, owner, vm)
        self.family = family
        self.name = name
        self.words = words

    @property
    def key(self) -> tuple:
        return (self.ns, self.family, self.name)

    def script(self, chains: list[NftChain]) -> str:
        """The script declaring the table with ``chains`` (this table's, in order)."""
        body = "".join(c.block() for c in chains if c.table == self.name)
        return f'table {self.family} {self.name} {{\n  comment "fireroute"\n{body}}}\n'

    def what(self, verb: str = "create") -> str:
        return self.words


class NftElement(Obj):
    """A set or map element: ``value`` as ``nft list`` prints it (a map element as
    ``key : value``), tagged with its owner in a comment (``<id>:<vm>``, or ``<id>:bridge:<br>``
    for a masquerading bridge's shared egress element, whose ``vm`` is None)."""

    __slots__ = ("family", "table", "set", "value")
    kind = "nft element"

    def __init__(
        self, family: str, table: str, set_name: str, value: str, owner: str, vm: str | None
    ) -> None:
        self.ns, self.owner, self.vm = None, owner, vm  # (Obj.__init__, inlined: per element)
        self.family = family
        self.table = table
        self.set = set_name
        self.value = value

    @property
    def key(self) -> tuple:
        return (self.ns, self.family, self.table, self.set, self.value)

    def tagged(self) -> str:
        """The element with its comment: after the key (a map element's value follows it)."""
        key, colon, value = self.value.partition(" : ")
        tag = f'comment "{self.owner}"'
        return f"{key} {tag} : {value}" if colon else f"{self.value} {tag}"

    def text(self, verb: str) -> str:
        """``add`` or ``delete``: the one line doing it to this element alone."""
        return f"{verb} element {self.family} {self.table} {self.set} {{ {self.tagged()} }}\n"

    def what(self, verb: str = "add") -> str:
        return f"{verb} {self.value} to set {self.set} of {self.family} {self.table}"


def element_lines(
    verb: str, family: str, table: str, elems: list[NftElement], rank: dict[str, int]
) -> str:
    """One ``verb element`` line per set of ``table`` (the elements' own in every verb), in
    the order ``rank`` gives the sets, each with its elements in the order given."""
    by_set: dict[str, list[str]] = {}
    for e in elems:
        by_set.setdefault(e.set, []).append(e.tagged())
    return "".join(
        f"{verb} element {family} {table} {name} {{ {', '.join(values)} }}\n"
        for name, values in sorted(by_set.items(), key=lambda kv: rank[kv[0]])
    )


def by_set(elems: list[NftElement]) -> dict[str, list[str]]:
    """set -> the elements' values (untagged), as a table's listing is compared with them."""
    out: dict[str, list[str]] = {}
    for e in elems:
        out.setdefault(e.set, []).append(e.value)
    return out
