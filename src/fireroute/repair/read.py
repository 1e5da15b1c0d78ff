"""What the kernel has: links in every namespace of ours, tables, chains, set elements,
iptables rules, read once per command (``Kernel``)."""

from __future__ import annotations

import json
import os

from fireroute import jsontext
from fireroute.errors import KernelError
from fireroute.kernel import observe
from fireroute.kernel.run import Runner, which
from fireroute.model import Vm
from fireroute.plan import bridge, clone, cni, host, iptables
from fireroute.plan.steps import in_netns
from fireroute.repair import order

COUNTER = "counter packets "


def _links(runner: Runner, netns: str | None = None) -> dict[str, dict]:
    res = runner(in_netns(netns, ["ip", "-j", "-d", "addr", "show"]), None)
    if res.rc != 0:
        raise KernelError(f"list links{f' in {netns}' if netns else ''}", res.err)
    docs = json.loads(res.out or "[]")
    return {str(d["ifname"]): d for d in docs if isinstance(d, dict) and "ifname" in d}


def parse_chains(listing: str) -> dict[str, tuple[str, list[str]]]:
    """``nft list table`` text -> {chain: (header, rules)}, counters' values left out."""
    out: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    header = ""
    rules: list[str] = []
    for raw in listing.splitlines():
        line = raw.strip()
        if current is None:
            if line.startswith("chain ") and line.endswith("{"):
                current, header, rules = line.split()[1], "", []
            continue
        if line == "}":
            out[current] = (header, rules)
            current = None
        elif line.startswith("type ") and not rules and not header:
            header = line
        elif line:
            rules.append(_uncounted(line))
    return out


def _uncounted(rule: str) -> str:
    while COUNTER in rule:  # "counter packets 3 bytes 180" -> "counter"
        at = rule.index(COUNTER)
        rest = rule[at + len(COUNTER) :].split(" ", 3)  # N bytes M rest
        rule = rule[:at] + "counter" + (" " + rest[3] if len(rest) > 3 else "")
    return rule


def _chains(
    runner: Runner, table: str, netns: str | None = None, family: str = "ip"
) -> dict | None:
    argv = ["nft", "list", "table", family, table]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    res = runner(argv, None)
    if res.rc != 0:
        if "No such file or directory" in res.err:
            return None
        raise KernelError(f'read nftables table "{table}"', res.err)
    return parse_chains(res.out)


class Kernel:
    """What the host holds: links (and, per clone namespace, what is inside it), our nft tables
    (chains and elements), tagged iptables rules, routes of the root namespace."""

    def __init__(self, runner: Runner, clones: list[Vm] = ()) -> None:  # type: ignore[assignment]
        self.runner = runner
        self.links = _links(runner)
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        """table -> set -> {element value (as nft text) -> comment}"""
        self.chains: dict[str, dict[str, tuple[str, list[str]]]] = {}
        if which("nft"):
            for table in observe.nft_our_tables(runner):
                self.tables[table] = observe.nft_elements(table, runner) or {}
                self.chains[table] = _chains(runner, table) or {}
        self.btables: dict[str, dict[str, dict[str, str]]] = {}
        """the anti-spoofing tables of bridge guests (``bridge`` family), as ``tables``"""
        self.bchains: dict[str, dict[str, tuple[str, list[str]]]] = {}
        if which("nft"):
            for table in observe.nft_our_tables(runner, bridge.FAMILY):
                self.btables[table] = observe.nft_elements(table, runner, bridge.FAMILY) or {}
                self.bchains[table] = _chains(runner, table, family=bridge.FAMILY) or {}
        self.rules: list[tuple[str, str]] = []
        """the tagged iptables rules: (table, saved line)"""
        self.ipt_chains: dict[tuple[str, str], list[str]] = {}
        """every saved iptables line (foreign ones too) by (table, chain), in order"""
        if which("iptables-nft-save"):
            for t, line in observe.iptables_saved(runner):
                self.ipt_chains.setdefault((t, order.chain_of(line)), []).append(line)
                if iptables.comment_tag(line):
                    self.rules.append((t, line))
        self.ipt_have = {order.plain(line) for _, line in self.rules}
        """the tagged rules as fireroute renders them"""
        self.ipt_tagged = order.index(self.rules)
        """the tagged rules by tag, then by (table, chain), in order"""
        self.routes: set[str] = set()
        if any(v.mode == "clone" or v.delegated for v in clones):
            res = runner(["ip", "-j", "route", "show"], None)
            if res.rc == 0:
                self.routes = {  # as ``Route.shown`` writes them
                    f"{r.get('dst')}"
                    + (f" via {r['gateway']}" if r.get("gateway") else "")
                    + f" dev {r.get('dev')}"
                    for r in json.loads(res.out or "[]")
                    if isinstance(r, dict)
                }
        self.ns: dict[str, Namespace] = {}
        attached: dict[str, list[Vm]] = {}  # CNI attachments by namespace: one may hold several
        for vm in clones:
            if (
                vm.mode == "clone"
                and vm.netns
                and os.path.exists(f"{observe.NETNS_DIR}/{vm.netns}")
            ):
                self.ns[vm.netns] = Namespace(runner, vm.netns)
            elif vm.mode == "cni" and vm.netns and observe.netns_alive(vm.netns):
                attached.setdefault(vm.netns, []).append(vm)
        self.cni = {ns: Attachment(runner, ns, vms) for ns, vms in attached.items()}
        """per CNI attachment's namespace path (one that exists): what is inside it"""


class Namespace:
    """One clone namespace from inside: links, routes, forwarding, its NAT table."""

    def __init__(self, runner: Runner, name: str) -> None:
        self.links = _links(runner, name)
        res = runner(["ip", "-n", name, "-j", "route", "show"], None)
        self.routes = json.loads(res.out or "[]") if res.rc == 0 else []
        res = runner(["ip", "netns", "exec", name, "sysctl", "-n", host.FORWARD_KEY], None)
        self.forwarding = res.out.strip() if res.rc == 0 else "?"
        self.chains = _chains(runner, clone.NS_TABLE, name)


class Attachment:
    """A CNI namespace from inside: its links, and the tc filters on the ingress of the veth
    and the tap of each attachment in it (one ``tc -batch``: a JSON list per device)."""

    def __init__(self, runner: Runner, netns: str, vms: list[Vm]) -> None:
        self.links = _links(runner, netns)
        self.filters: dict[str, list[dict]] = {}
        devs = [src for vm in vms for src, _ in cni.redirects(vm) if src in self.links]
        devs = list(dict.fromkeys(devs))
        if not devs:
            return
        lines = "".join(f"filter show dev {d} ingress\n" for d in devs)
        res = runner(in_netns(netns, ["tc", "-j", "-force", "-batch", "-"]), lines)
        try:  # a JSON list per device, in order (a device that vanished prints none)
            docs = jsontext.loads_all(res.out)
        except ValueError:
            docs = []
        for dev, doc in zip(devs, docs, strict=False):
            self.filters[dev] = (
                [f for f in doc if isinstance(f, dict)] if isinstance(doc, list) else []
            )

    def redirects(self, dev: str) -> list[str]:
        """The devices ``dev``'s ingress redirects to."""
        return [
            str(a.get("to_dev"))
            for f in self.filters.get(dev, [])
            for a in (f.get("options", {}) or {}).get("actions", []) or []
            if a.get("kind") == "mirred" and a.get("mirred_action") == "redirect"
        ]
