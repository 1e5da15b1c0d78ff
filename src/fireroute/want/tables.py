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
