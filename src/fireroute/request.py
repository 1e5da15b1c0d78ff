"""A request's options, from whichever door it came through, made into :class:`Options`.

The CLI (its flags), the Python API (keyword arguments) and the daemon (a JSON body) all hand
:func:`options` a mapping of the same field names; this is the one place that checks their
types and turns text into values, so the three doors accept and refuse exactly the same
things. Messages name an option as the CLI spells it (``--block-size``), whichever door it
came through.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Network

from fireroute.errors import UsageError
from fireroute.model import OFF_UNLESS_IPV6, Options, Owner, Published, Vm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

TEXT = (
    "backend",
    "pool",
    "uplink",
    "table",
    "tap",
    "owner",
    "mac",
    "guest_iface",
    "iface_id",
    "mode",
    "bridge",
    "bridge_address",
    "guest_ip",
    "range",
    "gateway",
    "clone_address",
    "egress",
    "netns",
    "container",
    "ifname",
    "network",
    "pool6",
)
FLAGS = (
    *("dhcp", "masquerade", "allow_peers", "allow_metadata", "fix_forward_policy", "ipv6"),
    "proxy_ndp",
)
LISTS = ("dns", "allow_host_ports", "allow_out", "deny_out", "publish")
FIELDS = (*TEXT, "block_size", "mtu", "prefix6", *FLAGS, *LISTS)
CNI_ONLY = ("netns", "container", "ifname", "network", "mtu")
"""fields only the CNI plugin sets (the CLI has no flag for them; its ``--mtu`` is the one
Firecracker is told)"""
"""every option of ``up``, by the name the API and the daemon use (the CLI's flag with ``_``;
``allow_host_ports`` is ``--allow-host-port``, repeatable)"""


def flag(field: str) -> str:
    return "--allow-host-port" if field == "allow_host_ports" else "--" + field.replace("_", "-")


def options(fields: Mapping[str, object]) -> Options:
    """The :class:`Options` of ``fields`` (absent or None: the default). Raises UsageError
    naming the option for an unknown name, a value of the wrong type or a bad value."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise UsageError(f'unknown option "{unknown[0]}" (options: {", ".join(FIELDS)})')
    f = {k: v for k, v in fields.items() if v is not None}
    for k, v in f.items():
        if k in TEXT and not isinstance(v, str):
            raise UsageError(f"invalid {flag(k)}: expected a string")
        if k in FLAGS and not isinstance(v, bool):
            raise UsageError(f"invalid {flag(k)}: expected true or false")
        if k == "mtu" and (isinstance(v, bool) or not isinstance(v, int)):
            raise UsageError("invalid --mtu: expected a number")
        if k in LISTS and not (isinstance(v, list | tuple) and all(isinstance(x, str) for x in v)):
            raise UsageError(f"invalid {flag(k)}: expected a list of strings")
    return Options(
        backend=str(f.get("backend", "nft")),
        pool=pool_arg(str(f["pool"])) if "pool" in f else None,
        prefix=_block_size(f.get("block_size", 30)),
        uplink=_text(f, "uplink"),
        table=str(f.get("table", "firecracker")),
        tap=_text(f, "tap"),
        dns=_dns(f.get("dns", ())),  # type: ignore[arg-type]
        owner=Owner.parse(str(f["owner"])) if "owner" in f else None,
        mac=_text(f, "mac"),
        guest_iface=str(f.get("guest_iface", "eth0")),
        iface_id=str(f.get("iface_id", "eth0")),
        mode=str(f.get("mode", "nat")),
        bridge=_text(f, "bridge"),
        bridge_address=_text(f, "bridge_address"),
        guest=_text(f, "guest_ip"),
        addr_range=_text(f, "range"),
        dhcp=bool(f.get("dhcp", False)),
        gateway=_text(f, "gateway"),
        masquerade=bool(f.get("masquerade", False)),
        clone_address=_text(f, "clone_address"),
        allow_peers=bool(f.get("allow_peers", False)),
        fix_forward_policy=bool(f.get("fix_forward_policy", False)),
        allow_metadata=bool(f.get("allow_metadata", False)),
        allow_host_ports=[port(p) for p in f.get("allow_host_ports", ())],  # type: ignore[attr-defined]
        egress=str(f.get("egress", "internet")),
        allow_out=[cidr(n, "allow_out") for n in f.get("allow_out", ())],  # type: ignore[attr-defined]
        deny_out=[cidr(n, "deny_out") for n in f.get("deny_out", ())],  # type: ignore[attr-defined]
        netns=_text(f, "netns"),
        container=_text(f, "container"),
        ifname=_text(f, "ifname"),
        network=_text(f, "network"),
        mtu=f.get("mtu"),  # type: ignore[arg-type]
        publish=[Published.parse(p) for p in f.get("publish", ())],  # type: ignore[attr-defined]
        ipv6=bool(f.get("ipv6", False)),
        pool6=pool6_arg(str(f["pool6"])) if "pool6" in f else None,
        prefix6=prefix6_arg(f.get("prefix6", 64)),
        proxy_ndp=bool(f.get("proxy_ndp", False)),
    )


def fields_of(o: Options) -> dict[str, object]:
    """The request fields that give ``o`` again (the inverse of :func:`options`)."""
    return {
        "backend": o.backend,
        "pool": str(o.pool),
        "block_size": o.prefix,
        "uplink": o.uplink,
        "table": o.table,
        "tap": o.tap,
        "dns": [str(d) for d in o.dns],
        "owner": str(o.owner) if o.owner else None,
        "mac": o.mac,
        "guest_iface": o.guest_iface,
        "iface_id": o.iface_id,
        "mode": o.mode,
        "bridge": o.bridge,
        "bridge_address": o.bridge_address,
        "guest_ip": o.guest,
        "range": o.addr_range,
        "dhcp": o.dhcp,
        "gateway": o.gateway,
        "masquerade": o.masquerade,
        "clone_address": o.clone_address,
        "allow_peers": o.allow_peers,
        "allow_metadata": o.allow_metadata,
        "fix_forward_policy": o.fix_forward_policy,
        "allow_host_ports": [f"{p}/{proto}" for p, proto in o.allow_host_ports],
        "egress": o.egress,
        "allow_out": [str(n) for n in o.allow_out],
        "deny_out": [str(n) for n in o.deny_out],
        "netns": o.netns,
        "container": o.container,
        "ifname": o.ifname,
        "network": o.network,
        "mtu": o.mtu,
        "publish": [str(p) for p in o.publish],
        "ipv6": o.ipv6,
        "pool6": str(o.pool6) if o.pool6 is not None else None,
        "prefix6": o.prefix6,
        "proxy_ndp": o.proxy_ndp,
    }


def pool_arg(text: str) -> IPv4Network:
    try:
        return IPv4Network(text, strict=True)
    except ValueError as exc:
        raise UsageError(
            f'invalid pool "{text}": {exc} (expected an IPv4 CIDR such as 172.16.0.0/16)'
        ) from None


def pool6_arg(text: str) -> IPv6Network:
    """--pool6: an IPv6 CIDR without host bits (a /64 or shorter, or with --prefix6 N a
    /N or shorter: checked with the options)."""
    example = "expected an IPv6 CIDR such as fd3c:9a1e:52b0::/48"
    if "%" in text:
        raise UsageError(f'invalid --pool6 "{text}": a pool has no zone (%); {example}')
    if "/" not in text:
        raise UsageError(f'invalid --pool6 "{text}": give the prefix length; {example}')
    try:
        pool = IPv6Network(text, strict=True)
    except ValueError as exc:
        why = "not an IPv6 network" if ":" not in text else str(exc)
        raise UsageError(f'invalid --pool6 "{text}": {why} ({example})') from None
    return pool  # (its size against the VM's block: Options, which knows --prefix6)


def _text(f: Mapping[str, object], key: str) -> str | None:
    return str(f[key]) if key in f else None


def prefix6_arg(value: object) -> int:
    """--prefix6: a VM's IPv6 block's prefix length, 64 (default) to 126 (or /64../126)."""
    size = str(value).lstrip("/")
    if isinstance(value, bool) or not (size.isascii() and size.isdigit()):
        raise UsageError(f'invalid --prefix6 "{value}": use 64 (default) to 126')
    return int(size)


def _block_size(value: object) -> int:
    size = str(value).lstrip("/")
    if isinstance(value, bool) or not (size.isascii() and size.isdigit()):
        raise UsageError(f'invalid --block-size "{value}": use 24..30 (or /24../30)')
    return int(size)


def _dns(values: list[str]) -> tuple[IPv4Address, ...]:
    dns = []
    for d in values:
        try:
            dns.append(IPv4Address(d))
        except ValueError:
            raise UsageError(f'invalid --dns "{d}": expected an IPv4 address') from None
    if len(dns) > 2:
        raise UsageError("at most two --dns servers fit the kernel ip= argument")
    return tuple(dns)


def cidr(text: str, field: str) -> IPv4Network | IPv6Network:
    """An IPv4 or IPv6 CIDR without host bits (``10.0.0.0/8``, ``2001:db8::/32``; an address
    alone is a /32 or a /128)."""
    try:
        if ":" in text:
            return IPv6Network(text, strict=True)
        return IPv4Network(text, strict=True)
    except ValueError as exc:
        raise UsageError(f'invalid {flag(field)} "{text}": {exc}') from None


def port(text: str) -> tuple[int, str]:
    """``PORT/tcp`` or ``PORT/udp``."""
    number, _, proto = text.partition("/")
    if not number.isdigit() or proto not in ("tcp", "udp"):
        raise UsageError(f'invalid --allow-host-port "{text}": use PORT/tcp or PORT/udp')
    return int(number), proto


# -- a request against a VM that is up ----------------------------------------------------


def differences(vm: Vm, options: Options) -> list[str]:
    """How a request for an existing VM differs from what it has, option by option, as
    "--name: has X, asked Y". What the request leaves open (uplink, tap, MAC) or states as the
    VM already has it is no difference, nor is the order of --allow-host-port."""
    have, want = vm.options.identity(), options.identity()
    for d in (have, want):  # (a v4-only VM's identity leaves them out)
        for key, off in OFF_UNLESS_IPV6.items():
            d.setdefault(key, off)
    want["host_nets"] = have["host_nets"]  # read by up, not asked for
    for key, actual in (
        ("uplink", vm.uplink),
        ("tap", vm.vm_tap),
        ("mac", vm.mac),
        ("bridge_address", vm.options.bridge_address),  # read from an adopted bridge
    ):
        if want[key] is None or str(want[key]).upper() == str(actual).upper():
            want[key] = have[key]
    for d in (have, want):
        ports = d["allow_host_ports"]
        listed = ports if isinstance(ports, (list, tuple)) else ()
        d["allow_host_ports"] = sorted(tuple(p) for p in listed)
    return [
        f"--{FLAG_NAMES.get(key, key.replace('_', '-'))}: has {_shown(have[key])}, "
        f"asked {_shown(want[key])}"
        for key in have
        if have[key] != want[key]
    ]


FLAG_NAMES = {
    "addr_range": "range",
    "guest": "guest-ip",
    "prefix": "block-size",
    "allow_host_ports": "allow-host-port",
}
"""Options whose flag is not their field's name"""


def _shown(value: object) -> str:
    if value is None or value is False:
        return "none"
    if value is True:
        return "yes"
    if isinstance(value, list):
        return (
            ",".join(
                "/".join(map(str, v)) if isinstance(v, tuple | list) else str(v) for v in value
            )
            or "none"
        )
    return str(value)
