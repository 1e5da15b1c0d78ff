"""What the kernel has, as repair compares it: a thin view (``Kernel``) over the reader's
objects (kernel/read.py's ``Current``), read once per command."""

from __future__ import annotations

from fireroute.kernel.read import Current, Source, parse_chains, read
from fireroute.kernel.run import Runner
from fireroute.model import Vm
from fireroute.repair import order
from fireroute.want.clone import NS_TABLE
from fireroute.want.iptables import IptRule
from fireroute.want.netns import Route
from fireroute.want.objects import FORWARD_KEY, Link

__all__ = ["Attachment", "Kernel", "Namespace", "parse_chains"]

Sets = dict[str, dict[str, dict[str, str]]]
"""table -> set -> {element value (as nft text) -> comment}"""
Chains = dict[str, dict[str, tuple[str, list[str]]]]
"""table -> chain -> (header, rules)"""


class Kernel:
    """What the host holds: ``links`` of the root namespace (and, per clone namespace or CNI
    attachment of the VMs given, what is inside it), our nft tables (``tables``/``chains`` of
    the NAT family, ``btables``/``bchains`` of the bridge family), the tagged iptables rules,
    routes of the root namespace. ``current`` is the whole read."""

    def __init__(self, runner: Runner, vms: list[Vm] = (), source: Source | None = None) -> None:  # type: ignore[assignment]
        self.runner = runner
        cur = self.current = read(source or Source(runner), vms)
        self.links = cur.links()
        self.tables, self.chains = _family(cur, "ip")
        self.btables, self.bchains = _family(cur, "bridge")
        self.rules: list[IptRule] = [r for r in cur.ipt if r.owner]
        """the tagged iptables rules, in chain order"""
        self.ipt_chains = order.chains(cur.ipt)
        """every saved iptables line (foreign ones too) by (table, chain), in order"""
        self.ipt_have = {r.saved for r in self.rules}
        self.ipt_tagged = order.index([(r.table, r.saved) for r in self.rules])
        """the tagged rules by tag, then by (table, chain), in order"""
        self.routes = {r.shown() for r in cur.of(Route, None)}
        """the root namespace's routes, as ``Route.shown`` writes them"""
        self.ns = {n: Namespace(cur, n) for n in cur.inside if not n.startswith("/")}
        self.cni = {n: Attachment(cur, n) for n in cur.inside if n.startswith("/")}
        """per CNI attachment's namespace path (one that exists): what is inside it"""

    def addrs(self, dev: str, ns: str | None = None) -> set[str]:
        return self.current.addrs(dev, ns)

    def sysctl(self, path: str) -> str | None:
        """A per-device sysctl of the root namespace (``net/ipv6/conf/fr-a/disable_ipv6``)."""
        return self.current.sysctls.get((None, path))

    def namespaces(self, instance: str) -> list[str]:
        """The namespaces made for the clones of the state file ``instance``."""
        return [n for n in self.current.namespaces if n.startswith(f"fireroute-{instance}-")]

    def ports(self, bridge: str) -> set[str]:
        return {link.name for link in self.links.values() if link.master == bridge}


def _family(cur: Current, family: str) -> tuple[Sets, Chains]:
    tables = cur.tables(family, None)
    return (
        {t: cur.elements(family, t) for t in tables},
        {t: cur.chains(family, t) or {} for t in tables},
    )


class Namespace:
    """One clone namespace from inside: links, routes, forwarding, its NAT table."""

    def __init__(self, cur: Current, name: str) -> None:
        self.name = name
        self.links: dict[str, Link] = cur.links(name)
        self.routes: list[Route] = list(cur.of(Route, name))
        self.forwarding = cur.sysctls.get((name, FORWARD_KEY)) or "?"
        self.chains = cur.chains("ip", NS_TABLE, name)
        self._cur = cur

    def addrs(self, dev: str) -> set[str]:
        return self._cur.addrs(dev, self.name)


class Attachment:
    """A CNI namespace from inside: its links, and where the ingress of each device of an
    attachment redirects to."""

    def __init__(self, cur: Current, netns: str) -> None:
        self.links: dict[str, Link] = cur.links(netns)
        self.netns = netns
        self._cur = cur

    def redirects(self, dev: str) -> list[str]:
        """The devices ``dev``'s ingress redirects to."""
        return self._cur.redirects.get((self.netns, dev), [])
