"""Read what the host holds: default route, uplink, routes that overlap candidate blocks,
nftables table ownership, tagged iptables rules. Each probe is one process."""

from __future__ import annotations

import os
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

from fireroute import jsontext
from fireroute.errors import ConflictError, KernelError, PermissionDenied, UsageError
from fireroute.kernel.apply import failed_lines
from fireroute.kernel.run import Child, Done, Result, Runner, launch, run
from fireroute.want.tables import TABLE_COMMENT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

CAP_NET_ADMIN = 12
UNROUTED = IPv4Address("240.0.0.1")  # class E: only a default route covers it


def require_net_admin(action: str) -> None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    if int(line.split()[1], 16) >> CAP_NET_ADMIN & 1:
                        return
                    break
    except OSError:
        if os.geteuid() == 0:
            return
    raise PermissionDenied(
        f"cannot {action}: Operation not permitted (run as root or with CAP_NET_ADMIN)"
    )


def ip_batch_json(
    lines: list[str], runner: Runner = run, details: bool = False
) -> list[object | None]:
    """Run ``ip -j -force -batch`` and give each line's JSON (None where the line failed)."""
    argv = (
        ["ip", "-j", "-d", "-force", "-batch", "-"]
        if details
        else ["ip", "-j", "-force", "-batch", "-"]
    )
    res = runner(argv, "".join(line + "\n" for line in lines))
    failed = {n - 1 for n in failed_lines(res.err)}
    docs = iter(jsontext.loads_all(res.out))
    return [None if i in failed else next(docs, None) for i in range(len(lines))]


class HostView:
    """The resolved uplink and, per candidate block, the host route/address it overlaps."""

    __slots__ = ("uplink", "conflicts", "links")

    def __init__(
        self,
        uplink: str,
        conflicts: dict[IPv4Network, str],
        links: dict[str, dict | None] | None = None,
    ) -> None:
        self.uplink = uplink
        self.conflicts = conflicts
        self.links = links or {}
        """name -> ``ip -d link show`` record (None when absent), for the names asked"""


def probe(
    uplink: str | None,
    blocks: list[IPv4Network],
    is_own: Callable[[str], bool],
    runner: Runner = run,
    links: list[str] = (),  # type: ignore[assignment]
) -> HostView:
    """Resolve the uplink and find host routes/addresses overlapping ``blocks``.

    Each address of each block is looked up as ``ip route get fibmatch`` does, which answers
    with the FIB entry that would carry it (local table included, so host addresses are seen):
    in-process over rtnetlink (kernel/netlink.py), or with one ``ip -batch`` where netlink
    cannot be used or a scripted runner stands in for the host. ``links`` (bridge mode) are
    read with ``ip -d link show``, for their kind.
    """
    # the default route by a FIB lookup of a reserved (class E) address, which only the
    # default route covers; "route show default" would dump (and filter in user
    # space) every route, one per VM, which made up's cost grow with the VM count
    addrs = [(b, b.network_address + a) for b in blocks for a in range(b.num_addresses)]
    lookups = ([] if uplink else [int(UNROUTED)]) + [int(a) for _, a in addrs]
    docs = _fib(uplink, lookups, runner)
    found = _link_docs(links, runner) if links else {}
    if uplink is None:
        uplink = _default_uplink(docs[0], runner)
    elif docs[0] is None:
        raise UsageError(f'unknown uplink "{uplink}": no such interface on this host')
    conflicts: dict[IPv4Network, str] = {}
    for (b, _addr), doc in zip(addrs, docs[1:], strict=True):
        if b not in conflicts and isinstance(doc, list):
            desc = _overlap(doc, is_own)
            if desc is not None:
                conflicts[b] = desc
    return HostView(uplink, conflicts, found)


def _fib(uplink: str | None, lookups: list[int], runner: Runner) -> list[object | None]:
    """The uplink's record (or, with none given, the route to 240.0.0.1), then each lookup's
    FIB entry: over rtnetlink in-process, else with one ``ip -batch``."""
    if runner is run:
        try:
            from fireroute.kernel import netlink

            docs: list[object | None] = list(netlink.fib_match(lookups))
            if uplink is not None:
                docs.insert(0, [{"ifname": uplink}] if netlink.link_exists(uplink) else None)
            return docs
        except OSError:
            pass
    first = [f"link show dev {uplink}"] if uplink else []
    return ip_batch_json(first + [f"route get fibmatch {IPv4Address(a)}" for a in lookups], runner)


def _link_docs(links: list[str], runner: Runner) -> dict[str, dict | None]:
    """name -> its ``ip -d link show`` record (None when absent)."""
    docs = ip_batch_json([f"link show dev {name}" for name in links], runner, details=True)
    return {
        name: doc[0] if isinstance(doc, list) and doc and isinstance(doc[0], dict) else None
        for name, doc in zip(links, docs, strict=True)
    }


def _records(doc: object) -> list[dict]:
    return [r for r in doc if isinstance(r, dict)] if isinstance(doc, list) else []


def _default_uplink(route: object, runner: Runner) -> str:
    """The device of the default route (``route``: the FIB entry of 240.0.0.1)."""
    devs = [r.get("dev") for r in _records(route) if r.get("dev") and r.get("dst") == "default"]
    if not devs:  # something more specific covers 240.0.0.1: look the default route up
        shown = ip_batch_json(["route show default"], runner)[0]
        devs = [r.get("dev") for r in _records(shown) if r.get("dev")]
    if not devs:
        raise UsageError("no IPv4 default route on this host: name the uplink with --uplink")
    return str(devs[0])


def _overlap(doc: list, is_own: Callable[[str], bool]) -> str | None:
    """The first FIB entry of a lookup that is neither the default route nor one of ours,
    in words (``local 10.0.0.5 dev eth0 (table local)``)."""
    for r in _records(doc):
        dst = r.get("dst", "")
        if dst == "default" or (r.get("dev") and is_own(str(r["dev"]))):
            continue
        kind = r.get("type", "")
        dev = f"dev {r['dev']}" if r.get("dev") else ""
        desc = " ".join(x for x in (kind if kind != "unicast" else "", dst, dev) if x)
        return f"{desc} (table {r.get('table', 'main')})"
    return None


NETNS_DIR = "/var/run/netns"
NETNS_PREFIX = "fireroute-"


def netns_alive(path: str) -> bool:
    """Is ``path`` a network namespace (a runtime's bind mount of one, or /proc/PID/ns/net)?
    A runtime that removed the namespace may leave the empty file its mount was on."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def link_alias(name: str, runner: Runner = run) -> str | None:
    """The ifalias of a link, or None if it has none or does not exist."""
    doc = ip_batch_json([f"link show dev {name}"], runner)[0]
    if isinstance(doc, list) and doc:
        return doc[0].get("ifalias")  # type: ignore[union-attr]
    return None


def check_table_owner(table: str, runner: Runner = run, family: str = "ip") -> bool:
    """True if our table exists, False if absent; ConflictError if it exists and is not ours.

    nft 1.0.6 leaves table comments out of its JSON, so the terse text listing is read.
    """
    return _our_listing(table, runner, family, ["-t"]) is not None


def _our_listing(table: str, runner: Runner, family: str, flags: list[str]) -> str | None:
    """``nft FLAGS list table``'s text if the table is ours; None if there is none;
    ConflictError if it is not ours, UsageError if nft reads its name as a keyword."""
    return _listing_of(runner(["nft", *flags, "list", "table", family, table], None), table, family)


def _listing_of(res: Result, table: str, family: str) -> str | None:
    """A ``list table`` process's text if the table is ours (see :func:`_our_listing`)."""
    if res.rc != 0:
        if "No such file or directory" in res.err:
            return None
        if "syntax error" in res.err:
            raise keyword_table(table)
        raise KernelError(f'read nftables table "{table}"', res.err)
    if table in our_tables(res.out, family):
        return res.out
    raise not_ours(table, family)


def not_ours(table: str, family: str = "ip") -> ConflictError:
    return ConflictError(
        f'nftables table "{family} {table}" exists and was not created by fireroute; '
        "remove it or choose another with --table"
    )


def keyword_table(table: str) -> UsageError:
    return UsageError(
        f'invalid table name "{table}": nft reads it as a keyword; choose another with --table'
    )


def is_keyword_table(table: str, nft_error: str) -> bool:
    """Did nft refuse a script because the table's name is one of its keywords?"""
    return f"syntax error, unexpected {table}," in nft_error or (
        f"syntax error, unexpected {table}\n" in nft_error + "\n"
    )


def our_tables(listing: str, family: str = "ip") -> list[str]:
    """Names of the ``family`` tables carrying our comment in an ``nft -t list`` text listing
    (the comment is the line right after the table's header)."""
    lines = listing.splitlines()
    return [
        line.split()[2]
        for line, after in zip(lines, [*lines[1:], ""], strict=False)
        if line.startswith(f"table {family} ") and after.strip() == f'comment "{TABLE_COMMENT}"'
    ]


def nft_our_tables(runner: Runner = run, family: str = "ip") -> list[str]:
    return nft_tables(runner, family)[0]


def nft_tables(runner: Runner = run, family: str = "ip") -> tuple[list[str], list[str]]:
    """(ours, every table) of a family, from one terse listing."""
    res = runner(["nft", "-t", "list", "ruleset", family], None)
    if res.rc != 0:
        raise KernelError("list nftables tables", res.err)
    every = [
        line.split()[2] for line in res.out.splitlines() if line.startswith(f"table {family} ")
    ]
    return our_tables(res.out, family), every


def tagged_links(runner: Runner = run) -> dict[str, str]:
    """{name: alias} of the links in fireroute's interface groups that carry its alias prefix
    (every state file's: the caller picks its own with fireroute.owner.parse)."""
    from fireroute.owner import PREFIX as ALIAS_PREFIX
    from fireroute.want.objects import DOOMED_GROUP, LINK_GROUP

    docs = ip_batch_json([f"link show group {g}" for g in (LINK_GROUP, DOOMED_GROUP)], runner)
    return {
        str(link["ifname"]): str(link.get("ifalias", ""))
        for doc in docs
        for link in _records(doc)
        if str(link.get("ifalias", "")).startswith(ALIAS_PREFIX)
    }


def foreign_links(instance: str, runner: Runner = run) -> list[str]:
    """Links of fireroute's made for another state file (or by a fireroute before state ids)."""
    from fireroute import owner

    return [
        name
        for name, alias in tagged_links(runner).items()
        if (owner.parse(alias) or ("",))[0] != instance
    ]


def link_networks(
    dev: str, runner: Runner = run, ipv6: bool = False
) -> list[IPv4Network | IPv6Network]:
    """The IPv4 networks of a link's addresses (``10.0.0.5/24`` -> ``10.0.0.0/24``), and
    with ``ipv6`` its IPv6 ones but link-local (``--egress public`` denies fe80::/10)."""
    docs = _records(ip_batch_json([f"address show dev {dev}"], runner)[0])
    out: list[IPv4Network | IPv6Network] = []
    for d in docs:
        for a in d.get("addr_info", []):
            text = f"{a['local']}/{a['prefixlen']}"
            if a.get("family") == "inet":
                out.append(IPv4Interface(text).network)
            elif ipv6 and a.get("family") == "inet6" and a.get("scope") != "link":
                out.append(IPv6Interface(text).network)
    return out


def has_address(dev: str, cidr: str, runner: Runner = run) -> bool:
    """Has the link ``dev`` the address ``cidr`` (``fe80::1/64``)?"""
    docs = _records(ip_batch_json([f"address show dev {dev}"], runner)[0])
    found = (a for d in docs for a in d.get("addr_info", []))
    return any(f"{a.get('local')}/{a.get('prefixlen')}" == cidr for a in found)


def bridged6(bridges: Iterable[str], runner: Runner = run) -> list[tuple[str, str]]:
    """(block, bridge): the IPv6 routes onto ``bridges`` that are not the kernel's (a bridge
    guest's /64, want/bridge.py route6), one ``ip`` for all."""
    names = set(bridges)
    if not names:
        return []
    res = runner(["ip", "-j", "-6", "route", "show"], None)
    return [
        (str(r["dst"]), str(r["dev"]))
        for r in _records(jsontext.loads(res.out) if res.rc == 0 and res.out.strip() else [])
        if r.get("dev") in names and r.get("protocol") != "kernel" and "/" in str(r.get("dst"))
    ]


def bridge_ports(bridge: str, runner: Runner = run) -> list[str]:
    docs = ip_batch_json([f"link show master {bridge}"], runner)
    return [str(d["ifname"]) for d in _records(docs[0])]


VERDICTS = frozenset({"accept", "drop", "continue", "return"})


def _element_text(v: object) -> str:
    """An element value from nft's JSON, as nft text."""
    if isinstance(v, dict) and "concat" in v:
        return " . ".join(_element_text(x) for x in v["concat"])
    if isinstance(v, dict) and "prefix" in v:  # an interval element: 10.0.0.0/8
        return f"{v['prefix']['addr']}/{v['prefix']['len']}"
    if isinstance(v, int):  # a port
        return str(v)
    if isinstance(v, dict) and ("jump" in v or "goto" in v):  # a verdict map's value
        verb = "jump" if "jump" in v else "goto"
        return f"{verb} {v[verb]['target']}"
    if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in VERDICTS:  # {"accept": null}
        return next(iter(v))
    if isinstance(v, dict) and "range" in v:  # an interval given by its ends
        low, high = v["range"]
        return f"{_element_text(low)}-{_element_text(high)}"
    text = str(v)
    if len(text) == 17 and text.count(":") == 5:  # a MAC address
        return text.lower()
    try:
        IPv4Address(text)
        return text
    except ValueError:
        pass
    try:  # (an interface name holds no ":")
        return str(IPv6Address(text)) if ":" in text else f'"{text}"'
    except ValueError:
        return f'"{text}"'


def _nft_listing(what: list[str], name: str, runner: Runner) -> list[dict] | None:
    """``nft -j list WHAT``'s items; None if there is no such object."""
    res = runner(["nft", "-j", "list", *what], None)
    if res.rc != 0:
        if "No such file or directory" in res.err:
            return None
        raise KernelError(f"read {name}", res.err)
    return _nftables(res.out)


def _nftables(text: str) -> list[dict]:
    """The items of an ``nft -j`` listing."""
    doc = jsontext.loads(text)
    return _records(doc.get("nftables", []) if isinstance(doc, dict) else [])


def nft_elements(
    table: str, runner: Runner = run, family: str = "ip"
) -> dict[str, dict[str, str]] | None:
    """{set: {element as nft text: comment}} of a table; None if there is no such table."""
    items = _nft_listing(["table", family, table], f'nftables table "{table}"', runner)
    if items is None:
        return None
    out: dict[str, dict[str, str]] = {}
    for item in items:
        s = item.get("set") or item.get("map")
        if s:
            out[str(s.get("name"))] = _elements_of([item])
    return out


def nft_set(
    table: str, set_name: str, runner: Runner = run, family: str = "ip"
) -> dict[str, str] | None:
    """{element as nft text: comment} of one set; None if there is no such set (or table)."""
    what = f'nftables set "{table} {set_name}"'
    items = _nft_listing(["set", family, table, set_name], what, runner)
    return None if items is None else _elements_of(items)


def _elements_of(items: list[dict]) -> dict[str, str]:
    """{element as nft text: comment} of the sets and maps in a listing (a map element as
    ``key : value``)."""
    elems: dict[str, str] = {}
    for item in items:
        s = item.get("set") or item.get("map") or {}
        kinds = s.get("type")
        raw = kinds if isinstance(kinds, list) and "integer" in kinds else None
        for e in s.get("elem", []):
            value = ""
            if isinstance(e, list) and len(e) == 2:  # a map's: [key, value]
                e, value = e[0], " : " + _element_text(e[1])
            if isinstance(e, dict) and "elem" in e:
                val = e["elem"]["val"]
                key = _raw_text(val, raw) if raw else _element_text(val)
                elems[key + value] = str(e["elem"].get("comment", ""))
            else:
                elems[_element_text(e) + value] = ""
    return elems


def _raw_text(v: object, kinds: list[str]) -> str:
    """A key with a raw payload field (a ``typeof`` set's ``integer``: fireroute's are 64-bit)
    as nft text: JSON gives that field as a signed decimal, nft's text (and want/) as ``0x…``."""
    fields = v["concat"] if isinstance(v, dict) and "concat" in v else [v]
    return " . ".join(
        hex(x % (1 << 64)) if k == "integer" and isinstance(x, int) else _element_text(x)
        for x, k in zip(fields, kinds, strict=False)
    )


def nft_counters(
    table: str, set_name: str, runner: Runner = run, family: str = "ip"
) -> dict[str, tuple[int, int]] | None:
    """{element as nft text: (packets, bytes)} of a set with counters; None if there is no
    such set (or table)."""
    what = f'nftables set "{table} {set_name}"'
    items = _nft_listing(["set", family, table, set_name], what, runner)
    if items is None:
        return None
    out: dict[str, tuple[int, int]] = {}
    for item in items:
        for e in (item.get("set") or {}).get("elem", []):
            if isinstance(e, dict) and "elem" in e:
                c = e["elem"].get("counter") or {}
                out[_element_text(e["elem"]["val"])] = (
                    int(c.get("packets", 0)),
                    int(c.get("bytes", 0)),
                )
    return out


def last_in_table(
    table: str, instance: str, runner: Runner = run, family: str = "ip"
) -> bool | None:
    """What the last VM of a state file in a table reads before it goes, in one listing
    (the table's owner and its elements' at once): None if there is no such table,
    ConflictError if it is not ours (UsageError for a name nft reads as a keyword), else
    whether it holds set elements that are not the state file ``instance``'s, so the table
    stays. nft's text listing holds the table's comment (its JSON leaves that out) and every
    element's."""
    return last_in_tables([(family, table)], instance, runner)[0]


def last_in_tables(
    tables: list[tuple[str, str]], instance: str, runner: Runner = run
) -> list[bool | None]:
    """:func:`last_in_table` of each (family, table), their listings side by side (one
    process each, started together: the last VMs with IPv6 read the ip and the ip6 table,
    ~80 ms each at 1000 VMs)."""
    from fireroute import owner

    jobs: list[Child | Done] = []
    try:
        for family, table in tables:
            jobs.append(launch(runner, ["nft", "list", "table", family, table]))
    finally:
        results = [job.wait() for job in jobs]  # (every started process waited for)
    out: list[bool | None] = []
    for (family, table), res in zip(tables, results, strict=True):
        listing = _listing_of(res, table, family)
        comments = element_comments(listing) if listing is not None else None
        out.append(
            None
            if comments is None
            else any((owner.parse(c) or ("",))[0] != instance for c in comments)
        )
    return out


def element_comments(listing: str) -> list[str]:
    """The comment of every set and map element in an ``nft list`` text listing, "" for an
    element without one. Quoted text (a comment, an interface name) is skipped whole, so a
    comma or brace in it ends nothing."""
    out: list[str] = []
    parts = listing.split('"')  # outside quotes at even indexes
    inside, comment = False, ""
    for k in range(0, len(parts), 2):
        plain = parts[k]
        while True:
            if not inside:
                at = plain.find("elements = {")
                if at < 0:
                    break
                inside, comment, plain = True, "", plain[at + len("elements = {") :]
            head, brace, plain = plain.partition("}")
            for _ in range(head.count(",")):  # each comma ends an element
                out.append(comment)
                comment = ""
            if not brace:
                last = head.rsplit(",", 1)[-1].split()[-1:]
                if last == ["comment"] and k + 1 < len(parts):  # the quoted text that follows
                    comment = parts[k + 1]
                break
            out.append(comment)
            inside = False
    return out


def nft_ip_chains(runner: Runner = run) -> dict[str, set[str]]:
    """{table: {chain}} of the kernel's ip-family nftables tables (what iptables-nft made
    shows here as it really is: iptables-nft-save also prints built-in chains that do not
    exist)."""
    return nft_ip_chains_held(runner)[0]


def nft_ip_chains_held(runner: Runner = run) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """What :func:`nft_ip_chains` returns, and from the same listing the (table, chain) of
    each base chain whose policy is not accept (someone's firewall: a DROP set there since)."""
    res = runner(["nft", "-j", "list", "chains", "ip"], None)
    if res.rc != 0:
        raise KernelError("list nftables chains", res.err)
    out: dict[str, set[str]] = {}
    held: set[tuple[str, str]] = set()
    for item in _nftables(res.out):
        c = item.get("chain")
        if c:
            out.setdefault(str(c["table"]), set()).add(str(c["name"]))
            if c.get("policy", "accept") != "accept":
                held.add((str(c["table"]), str(c["name"])))
    return out, held


def iptables_saved(runner: Runner = run) -> list[tuple[str, str]]:
    """(table, ``-A ...`` line) for every rule in the tables fireroute's rules go into."""
    return iptables_save(runner)[0]


def iptables_save(
    runner: Runner = run,
) -> tuple[list[tuple[str, str]], dict[str, dict[str, str]], list[str], set[str]]:
    """One iptables-nft-save: what :func:`iptables_saved` returns; the headers it printed,
    {table: {chain: policy}} (``-`` for a chain of the user's; a built-in chain that does not
    exist is printed too, ``ACCEPT``, in every table that does); of the tables fireroute's
    rules go into (:data:`STANDARD_CHAINS`, in their order) those it cannot read (made with
    nft directly: it prints ``# Table `nat' is incompatible`` and none of their rules); and
    those it reads but that hold a base chain it did not make (``contains incompatible
    base-chains``: nft's own, or one of its names at another priority, which would refuse
    iptables-nft's). The one place that tells such tables."""
    res = runner(["iptables-nft-save"], None)
    if res.rc != 0:
        raise KernelError("read iptables-nft rules", res.err)
    out: list[tuple[str, str]] = []
    shown: dict[str, dict[str, str]] = {}
    odd: set[str] = set()
    mixed: set[str] = set()
    table = ""
    for line in res.out.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            shown.setdefault(table, {})
        elif line.startswith(":") and table:
            chain, _, rest = line[1:].partition(" ")
            shown[table][chain] = rest.split(" ", 1)[0]
        elif line.startswith("-A ") and table in ("nat", "filter", "raw"):
            out.append((table, line))
        elif line.startswith("# Table `") and "' is incompatible" in line:
            odd.add(line[9:].partition("'")[0])
        elif line.startswith("# Table `") and "' contains incompatible base-chains" in line:
            mixed.add(line[9:].partition("'")[0])
    ours = list(dict.fromkeys(t for t, _ in STANDARD_CHAINS))
    return out, shown, [t for t in ours if t in odd], {t for t in ours if t in mixed}


STANDARD_CHAINS = {
    ("filter", "INPUT"): ("filter", "input", 0),
    ("filter", "FORWARD"): ("filter", "forward", 0),
    ("nat", "POSTROUTING"): ("nat", "postrouting", 100),
    ("raw", "PREROUTING"): ("filter", "prerouting", -300),
}
"""the base chains iptables-nft makes for the chains fireroute's rules use: (type, hook,
priority)"""


def foreign_chains(tables: list[str], runner: Runner = run) -> list[str]:
    """Of the chains fireroute's iptables rules use in ``tables``, those that exist but are not
    the base chain iptables-nft would make (``table/chain``): nft's own, a regular chain of
    that name, or a base chain at another hook or priority. iptables-nft cannot add to them."""
    res = runner(["nft", "-j", "list", "chains", "ip"], None)
    if res.rc != 0:
        raise KernelError("list nftables chains", res.err)
    out = []
    for item in _nftables(res.out):
        c = item.get("chain")
        if not c or c.get("table") not in tables:
            continue
        want = STANDARD_CHAINS.get((str(c["table"]), str(c["name"])))
        if want is not None and (c.get("type"), c.get("hook"), c.get("prio")) != want:
            out.append(f"{c['table']}/{c['name']}")
    return out
