"""Command-line options as data, read two ways.

argparse builds the full parser from these specs (help, abbreviations, every error message);
``fast_parse`` reads the plain forms of ``up`` and ``down`` without importing argparse (with
re, gettext and locale, and for ``up`` the Firecracker options), a per-VM command that
orchestrators call thousands of times. Whatever ``fast_parse`` is unsure of (an unknown or
abbreviated option, ``-h``, ``--``, a value starting with "-", a bad number, names split by
options) it leaves to argparse, so both always agree: tests/unit/test_cli_args.py checks that
on generated command lines.

Why it stays (issue 23 asked; 2026-12-07, 2 vCPU, cold processes, medians of 10-15 runs
interleaved with argparse only, i.e. ``parse_hot`` returning None; the VM's network inside a
throwaway namespace): ``up --dry-run`` (2nd VM) 32 ms against 49 ms (argparse only 1.38x),
``down --dry-run`` 55 against 64 ms (1.15x), a real ``up`` then ``down`` 103 against 124 ms
(1.19x). Measure again before changing either parser.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

FLAG, VALUE, INT, APPEND = "flag", "value", "int", "append"


class Opt:
    __slots__ = ("flag", "help", "kind", "default", "metavar")

    def __init__(
        self,
        flag: str,
        help: str,
        kind: str = VALUE,
        default: object = None,
        metavar: str | None = None,
    ) -> None:
        self.flag = flag
        self.help = help
        self.kind = kind
        self.default = default
        self.metavar = metavar

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def initial(self) -> object:
        if self.kind == FLAG:
            return False
        if self.kind == APPEND:
            return []
        return self.default

    def add_to(self, p: argparse.ArgumentParser) -> None:
        kw: dict[str, Any] = {"help": self.help, "dest": self.dest}  # add_argument's
        if self.metavar:
            kw["metavar"] = self.metavar
        if self.kind == FLAG:
            kw["action"] = "store_true"
        elif self.kind == APPEND:
            kw.update(action="append", default=[])
        else:
            kw["default"] = self.default
            if self.kind == INT:
                kw["type"] = int
        p.add_argument(self.flag, **kw)


class Args:
    """What argparse's Namespace holds, for a command line ``fast_parse`` read."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:  # as argparse.Namespace: any option, of the type its spec gives

        def __getattr__(self, name: str) -> Any: ...


def fast_parse(
    argv: list[str], opts: tuple[Opt, ...], positional: str, **fixed: object
) -> Args | None:
    """Options ``opts`` and one block of positional arguments (``positional``, like
    argparse's ``nargs="*"``), or None when argparse must read the command line."""
    by_flag = {o.flag: o for o in opts}
    values: dict[str, object] = {o.dest: o.initial() for o in opts}
    names: list[str] = []
    block = 0  # 0: no positional yet, 1: in the block, 2: block closed by an option
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            if block == 2:
                return None  # argparse: "unrecognized arguments"
            block = 1
            names.append(arg)
            i += 1
            continue
        if block == 1:
            block = 2
        flag, eq, inline = arg.partition("=")
        opt = by_flag.get(flag)
        if opt is None:
            return None
        if opt.kind == FLAG:
            if eq:
                return None
            values[opt.dest] = True
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        else:
            return None
        if value.startswith("-"):
            return None
        if opt.kind == INT:
            try:
                values[opt.dest] = int(value)
            except ValueError:
                return None
        elif opt.kind == APPEND:
            appended = values[opt.dest]
            assert isinstance(appended, list)  # Opt.initial
            appended.append(value)
        else:
            values[opt.dest] = value
    values[positional] = names
    values.update(fixed)
    return Args(**values)


COMMON = (
    Opt("--state", "state file (default $FIREROUTE_STATE or /var/lib/fireroute/state.db)"),
    Opt("--json", "machine-readable output", FLAG),
)
DRY_RUN = Opt("--dry-run", "print the commands, change nothing", FLAG)
DAEMON = Opt(
    "--daemon",
    "hand the command to fireroute serve on this socket (default $FIREROUTE_SOCKET; see "
    "docs/daemon.md)",
    metavar="SOCKET",
)

UP = (
    Opt("--count", "bring up VMs PREFIX0 .. PREFIX{N-1} in one batch", INT),
    Opt("--prefix", "name prefix for --count (default vm-)", default="vm-"),
    Opt("--backend", "nft (default) or iptables", default="nft"),
    Opt("--uplink", "internet-facing interface (default: the default route's)"),
    Opt(
        "--pool",
        "address pool (default 172.16.0.0/16; clone mode: the veth links' pool, "
        "default 10.200.0.0/16)",
    ),
    Opt("--block-size", "block prefix length, 24..30 (default 30)", default="30"),
    Opt("--table", "nftables table (default firecracker)", default="firecracker"),
    Opt("--tap", "tap name (default fr-<vm>, at most 15 bytes)"),
    Opt("--mac", "guest MAC (default 06:00 + the guest IPv4's octets)"),
    Opt("--dns", "DNS server for the guest", APPEND),
    Opt("--owner", "UID[:GID] allowed to open the tap (jailed Firecracker)"),
    Opt("--guest-iface", "interface name in the guest", default="eth0"),
    Opt("--iface-id", "Firecracker iface_id (default eth0)", default="eth0"),
    Opt("--mode", "nat (default), bridge or clone", default="nat"),
    Opt(
        "--fix-forward-policy",
        "add tagged ACCEPTs for this VM to iptables-nft's FORWARD chain (for hosts where "
        "Docker set its policy to DROP; see fireroute doctor)",
        FLAG,
    ),
    Opt("--allow-peers", "let this guest talk to other guests that allow it too", FLAG),
    Opt("--allow-metadata", "let this guest reach 169.254.169.254 (cloud metadata)", FLAG),
    Opt(
        "--allow-host-port",
        "let this guest reach the host on PORT/tcp or PORT/udp (repeatable)",
        APPEND,
        metavar="PORT/PROTO",
    ),
    Opt(
        "--egress",
        "what the guest may reach: internet (default), public (no private, special or host "
        "networks) or none (nothing beyond its gateway)",
        default="internet",
    ),
    Opt(
        "--publish",
        "forward the host's port to the guest's (repeatable): [ADDR:]HOSTPORT:GUESTPORT[/udp]; "
        "no ADDR: every host address (with --ipv6 its IPv6 ones too), 127.0.0.1: the host's "
        "loopback only, [IPV6ADDR]: that address",
        APPEND,
        metavar="SPEC",
    ),
    Opt(
        "--allow-out",
        "a CIDR (IPv4 or IPv6) the guest may reach whatever --egress says (repeatable)",
        APPEND,
    ),
    Opt(
        "--deny-out",
        "a CIDR (IPv4 or IPv6) the guest may not reach (repeatable; --allow-out wins)",
        APPEND,
    ),
    Opt("--bridge", "bridge mode: the bridge (default br0; created if missing)"),
    Opt(
        "--bridge-address",
        "bridge mode: address for a bridge we create, and the guests' gateway "
        "(e.g. 192.168.1.7/24)",
    ),
    Opt("--guest-ip", "bridge/clone mode: the guest's address with prefix"),
    Opt("--range", "bridge mode: allocate guest addresses from FIRST-LAST"),
    Opt("--dhcp", "bridge mode: the guest uses DHCP", FLAG),
    Opt("--gateway", "bridge mode: the LAN's router"),
    Opt("--masquerade", "bridge mode: NAT the guests out of the uplink", FLAG),
    Opt(
        "--clone-address",
        "clone mode: address the host reaches the guest at (default auto: the clone's veth "
        "address)",
    ),
    Opt("--skip-conflicts", "skip blocks that overlap host routes instead of failing", FLAG),
    Opt("--ipv6", "nat mode: give the guest IPv6 too (a /64 of --pool6), NAT66 out", FLAG),
    Opt(
        "--pool6",
        "with --ipv6: the IPv6 pool (default: the state file's own unique local /48)",
    ),
    Opt(
        "--prefix6",
        "with a global --pool6: each VM's IPv6 block is a /N, 64..126 (default 64; below "
        "a /64 the guest has no SLAAC)",
        default="64",
    ),
    Opt(
        "--proxy-ndp",
        "with a global --pool6: answer neighbour solicitations for the guest's IPv6 address "
        "on the uplink (an upstream that treats the uplink's prefix as on-link)",
        FLAG,
    ),
)
DOWN = (Opt("--all", "every VM in the state file", FLAG), DRY_RUN, *COMMON, DAEMON)
UP_COMMAND = (*UP, *COMMON, DRY_RUN, DAEMON)


def parse_hot(argv: list[str]) -> Args | None:
    """``up`` and ``down`` as orchestrators call them, read without argparse (None: let
    argparse read it). ``up`` with Firecracker options (``--socket`` ...) goes to argparse."""
    if argv[:1] == ["up"]:
        return fast_parse(argv[1:], UP_COMMAND, "names", cmd="up", socket=None)
    if argv[:1] == ["down"]:
        return fast_parse(argv[1:], DOWN, "names", cmd="down")
    return None
