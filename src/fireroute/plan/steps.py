"""Steps and plans.

A :class:`Step` is one command a person would type (an ``ip`` line, an ``nft`` script, an
iptables-restore rule, a sysctl). The executor batches consecutive steps of the same tool into
one process; :func:`as_commands` prints the plan the same way, so the dry run is exactly what
runs.
"""

from __future__ import annotations

from fireroute.want.objects import CALLER  # noqa: F401 (the executor finds it here)

IP, NFT, IPTABLES, SYSCTL, TC = "ip", "nft", "iptables", "sysctl", "tc"
CONNTRACK = "conntrack"
"""``text``: one conntrack command's arguments (``-D -p udp --orig-port-dst 5353``); finding
nothing to delete is done too"""
NF_TABLES = (NFT, IPTABLES)
BATCHED = (IP, TC)
"""tools whose lines run as one ``-batch -`` process (its errors name the failing line)"""
MAX_WAVE = 16
"""processes started at once, at most (many attachments' namespaces in one down)"""


class Step:
    """One command. ``text`` is, by tool: ip, one ``ip -batch`` line; nft, script text;
    iptables, one rule line (``table`` names its table); sysctl, ``key=value``. ``what`` is the
    action for error messages ('create tap "fr-web-1"'); ``undo`` its inverse steps."""

    __slots__ = ("tool", "text", "what", "vm", "undo", "table", "netns", "exclusive")

    def __init__(
        self,
        tool: str,
        text: str,
        what: str,
        vm: str | None = None,
        undo: tuple[Step, ...] = (),
        table: str = "",
        netns: str | None = None,
        exclusive: bool = False,
    ) -> None:
        self.tool = tool
        self.text = text
        self.what = what
        self.vm = vm
        self.undo = undo
        self.table = table
        self.netns = netns
        """run inside this network namespace instead of the caller's: a name under
        /run/netns (clone mode) or a path (a CNI attachment's)"""
        self.exclusive = exclusive
        """creates an object that must not exist yet: failing on "File exists" means it does
        (the executor raises AlreadyExists)"""

    def __repr__(self) -> str:
        return f"Step({self.tool!r}, {self.text!r})"


class Plan:
    def __init__(self, steps: list[Step] | None = None) -> None:
        self.steps: list[Step] = list(steps or [])
        self.forget: list[str] = []
        """state meta keys that are obsolete once this plan ran"""

    def add(self, *steps: Step) -> None:
        self.steps.extend(steps)

    def __bool__(self) -> bool:
        return bool(self.steps)


def groups(steps: list[Step]) -> list[list[Step]]:
    """Consecutive steps of the same tool (and namespace): one process each; consecutive
    sysctls are written together."""
    out: list[list[Step]] = []
    for step in steps:
        last = out[-1][0] if out else None
        if last and last.tool == step.tool and last.netns == step.netns:
            out[-1].append(step)
        else:
            out.append([step])
    return out


def waves(steps: list[Step]) -> list[list[list[Step]]]:
    """Groups that may run at the same time: consecutive groups in the caller's namespace,
    each of a different kind, with at most one nf_tables writer (nft or iptables-nft: their
    transactions would race on the ruleset generation). Their objects do not depend on one
    another (nft and iptables match devices by name, not index), so order within a wave is
    free. A named namespace's groups (clone mode, which first creates the namespace) run
    alone. A group in a namespace given by path (a CNI attachment's, which exists before the
    plan) may join the caller's groups, and they it, unless it is an ``ip`` group (it may make
    the links the caller's groups then address) or the wave holds a group of that namespace
    already (its second group works on what the first made). An ``ip`` group after a host
    sysctl group waits for it (a wave writes host sysctls after its processes; an IPv6
    address on a device whose IPv6 a sysctl switches on is refused before it)."""
    out: list[list[list[Step]]] = []
    for group in groups(steps):
        wave = out[-1] if out else None
        if wave is not None and _joins(group, wave):
            wave.append(group)
        else:
            out.append([group])
    return out


def _joins(group: list[Step], wave: list[list[Step]]) -> bool:
    tool, ns = group[0].tool, group[0].netns

    def alongside(g: list[Step]) -> bool:
        other = g[0].netns
        if other is None:
            return ns is None or (ns.startswith("/") and tool != IP)
        return other.startswith("/") and other != ns and (ns is not None or g[0].tool != IP)

    return (
        (ns is None or ns.startswith("/"))
        and len(wave) < MAX_WAVE
        and all(alongside(g) for g in wave)
        and all(g[0].tool != tool or g[0].netns != ns for g in wave)
        and not (tool in NF_TABLES and any(g[0].tool in NF_TABLES for g in wave))
        and not (tool == IP and any(g[0].tool == SYSCTL and g[0].netns is None for g in wave))
    )


def iptables_input(steps: list[Step]) -> str:
    """The iptables-restore document for a group of iptables steps, one section per table."""
    tables: dict[str, list[str]] = {}
    for s in steps:
        tables.setdefault(s.table, []).append(s.text)
    parts = []
    for table, lines in tables.items():
        parts.append(f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n")
    return "".join(parts)


def sysctl_path(key: str) -> str:
    """``net.ipv4.ip_forward`` or, for keys naming an interface (whose name may hold dots),
    the slash form ``net/ipv6/conf/fr-a.b/disable_ipv6``."""
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """argv run inside ``netns``: a path through ``nsenter --net=`` (which changes the network
    namespace only); a name with ``ip -n`` for ip itself, ``ip netns exec`` for the rest."""
    if netns is None:
        return argv
    if netns.startswith("/"):
        return ["nsenter", f"--net={netns}", *argv]
    if argv[0] == "ip":
        return ["ip", "-n", netns, *argv[1:]]
    return ["ip", "netns", "exec", netns, *argv]


def as_commands(plan: Plan) -> str:
    """The plan as a shell transcript: what a person would type to do the same."""
    out: list[str] = []
    for group in groups(plan.steps):
        tool, ns = group[0].tool, group[0].netns
        if tool in BATCHED:
            out.extend(" ".join(in_netns(ns, [tool])) + f" {s.text}" for s in group)
        elif tool == NFT:
            script = "".join(s.text if s.text.endswith("\n") else s.text + "\n" for s in group)
            cmd = " ".join(in_netns(ns, ["nft", "-f", "-"]))
            out.append(f"{cmd} <<'EOF'\n{script}EOF")
        elif tool == IPTABLES:
            cmd = " ".join(in_netns(ns, ["iptables-nft-restore", "--noflush"]))
            out.append(f"{cmd} <<'EOF'\n{iptables_input(group)}EOF")
        elif tool == SYSCTL:
            out.extend(" ".join(in_netns(ns, ["sysctl", "-w", st.text])) for st in group)
        elif tool == CONNTRACK:
            out.extend(" ".join(in_netns(ns, ["conntrack", *st.text.split()])) for st in group)
    return "\n".join(out) + ("\n" if out else "")
