"""The CNI protocol (spec 1.1, ``shared/reference/cni/SPEC.md``), as data: what a runtime asks
(environment and stdin) and what a plugin answers (a result in the asked version, or an error
object), with no kernel work. The plugin's verbs use this to read a request and to write
their answers; everything here is checked before anything is changed.

Versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0 (a result's ``ips`` carry ``"version": "4"``
before 1.0.0; CHECK exists from 0.4.0, GC and STATUS from 1.1.0).
"""

from __future__ import annotations

from fireroute import jsontext, request
from fireroute.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
SINCE = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
NEEDS = {  # environment each command requires (the spec's "Required environment parameters")
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}
# error codes of the spec
INCOMPATIBLE, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, BAD_ENV, IO, DECODE, BAD_CONFIG = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
)
TRY_AGAIN, UNAVAILABLE, UNAVAILABLE_DEGRADED = 11, 50, 51
GENERIC = 100
"""the first plugin-specific code (the spec's "Error codes"): 100 cannot be made, 101 the host
refused a change, 102 CHECK found a difference, 103 the IPAM plugin failed"""
STANDARD_KEYS = (  # keys of a plugin configuration the runtime or the spec define
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "args",
    "ipam",
    "dns",
    "prevResult",
    "runtimeConfig",
    "capabilities",
    "disableCheck",
    "disableGC",
    "cni.dev/valid-attachments",
)
PLUGIN_KEYS = {  # fireroute's keys -> the option of up they set (None: the plugin's own)
    "pool": "pool",
    "blockSize": "block_size",
    "uplink": "uplink",
    "backend": "backend",
    "table": "table",
    "allowPeers": "allow_peers",
    "allowMetadata": "allow_metadata",
    "allowHostPorts": "allow_host_ports",
    "state": None,
    "mtu": None,
    "tapName": None,
}


class CniError(Exception):
    """An error the plugin answers with: ``code`` from the spec's table (or 100+)."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code, self.msg, self.details = code, msg, details

    def as_json(self, version: str = "1.1.0") -> dict[str, object]:
        out: dict[str, object] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


class Request:
    """One invocation: ``command``, the environment's values and the parsed configuration."""

    __slots__ = ("command", "container", "netns", "ifname", "args", "path", "config", "version")

    def __init__(self, env: Mapping[str, str], stdin: bytes) -> None:
        command = env.get("CNI_COMMAND", "")
        if command not in COMMANDS:
            raise CniError(BAD_ENV, "invalid CNI_COMMAND", f"{command!r}: use one of {COMMANDS}")
        self.command = command
        missing = [k for k in NEEDS[command] if not env.get(k)]
        if missing:
            raise CniError(BAD_ENV, "missing environment variables", ", ".join(missing))
        self.container = env.get("CNI_CONTAINERID", "")
        if self.container and not _container_id(self.container):
            raise CniError(BAD_ENV, "invalid CNI_CONTAINERID", repr(self.container))
        self.netns = env.get("CNI_NETNS", "")
        self.ifname = env.get("CNI_IFNAME", "")
        if self.ifname and not _ifname(self.ifname):
            raise CniError(BAD_ENV, "invalid CNI_IFNAME", f"{self.ifname!r}: at most 15 bytes")
        self.args = cni_args(env.get("CNI_ARGS", ""))
        self.path = [p for p in env.get("CNI_PATH", "").split(":") if p]
        self.config = _config(stdin)
        self.version = str(self.config.get("cniVersion", "0.3.0" if command == "VERSION" else ""))
        if self.version not in SUPPORTED:
            raise CniError(
                INCOMPATIBLE,
                "incompatible CNI version",
                f"{self.version!r}: this plugin supports {', '.join(SUPPORTED)}",
            )
        since = SINCE.get(command)
        if since and _key(self.version) < _key(since):
            raise CniError(INCOMPATIBLE, f"{command} needs CNI {since}", f"asked {self.version}")
        if command != "VERSION":
            _check_keys(self.config)

    def options(self) -> dict[str, object]:
        """The configuration's fireroute keys as the options of ``up`` (checked by
        :func:`fireroute.request.options`, as every door's)."""
        out: dict[str, object] = {}
        for key, field in PLUGIN_KEYS.items():
            if field is not None and key in self.config:
                out[field] = self.config[key]
        dns = self.config.get("dns")
        if dns is not None and not _dns_ok(dns):
            raise CniError(
                BAD_CONFIG,
                "invalid network configuration",
                '"dns" must be an object: nameservers, search, options lists of strings, '
                "domain a string",
            )
        if isinstance(dns, dict) and dns.get("nameservers"):
            out["dns"] = [s for s in dns["nameservers"] if isinstance(s, str) and ":" not in s]
        try:
            request.options(out)
        except UsageError as exc:
            raise CniError(BAD_CONFIG, "invalid network configuration", str(exc)) from None
        return out


def port_mappings(config: dict[str, object]) -> list[str]:
    """``runtimeConfig.portMappings`` (the CNI convention a runtime fills from ``-p``, when the
    plugin's ``capabilities`` has ``portMappings``) as ``--publish`` specs. IPv6 host
    addresses are left out (fireroute publishes IPv4)."""
    runtime = config.get("runtimeConfig")
    if runtime is None:
        return []
    bad = CniError(BAD_CONFIG, "invalid network configuration", "runtimeConfig.portMappings")
    if not isinstance(runtime, dict):
        raise bad
    maps = runtime.get("portMappings", [])
    if not isinstance(maps, list):
        raise bad
    out = []
    for m in maps:
        if not isinstance(m, dict):
            raise bad
        host, guest = m.get("hostPort"), m.get("containerPort")
        proto, addr = m.get("protocol", "tcp"), m.get("hostIP", "")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (host, guest)):
            raise bad
        if not isinstance(proto, str) or not isinstance(addr, str):
            raise bad
        if ":" in addr:
            continue
        at = f"{addr}:" if addr not in ("", "0.0.0.0") else ""
        out.append(f"{at}{host}:{guest}/{proto.lower()}")
    return out


def _dns_ok(dns: object) -> bool:
    if not isinstance(dns, dict) or not isinstance(dns.get("domain", ""), str):
        return False
    lists = [dns.get(k, []) for k in ("nameservers", "search", "options")]
    return all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists)


def prev_result(config: dict[str, object]) -> tuple[list[dict], list[dict]]:
    """The interfaces and IP entries of ``prevResult`` (a plugin before this one in the
    list), checked: an object with lists of objects, each IP's ``interface`` an index into
    the interfaces; ``version`` keys of IP entries dropped (the answer's version decides)."""
    prev = config.get("prevResult")
    if prev is None:
        return [], []
    bad = CniError(BAD_CONFIG, "invalid network configuration", "prevResult is not a CNI result")
    if not isinstance(prev, dict):
        raise bad
    interfaces, ips = prev.get("interfaces", []), prev.get("ips", [])
    if not isinstance(interfaces, list) or not isinstance(ips, list):
        raise bad
    if not all(isinstance(i, dict) for i in interfaces + ips):
        raise bad
    for ip in ips:
        at = ip.get("interface")
        if at is not None and (
            isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < len(interfaces)
        ):
            raise bad
    return list(interfaces), [{k: v for k, v in ip.items() if k != "version"} for ip in ips]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def _container_id(text: str) -> bool:
    return (
        text[0].isascii()
        and text[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in text)
    )


def _ifname(text: str) -> bool:
    raw = text.encode()
    return 0 < len(raw) <= 15 and "/" not in text and not any(c.isspace() for c in text)


def cni_args(text: str) -> dict[str, str]:
    """``CNI_ARGS``: ``K=V;K2=V2``, alphanumeric keys (``IgnoreUnknown`` and the like)."""
    out: dict[str, str] = {}
    for part in filter(None, text.split(";")):
        key, eq, value = part.partition("=")
        if not eq or not key or not all(c.isascii() and (c.isalnum() or c == "_") for c in key):
            raise CniError(BAD_ENV, "invalid CNI_ARGS", repr(part))
        out[key] = value
    return out


def _config(stdin: bytes) -> dict[str, object]:
    if not stdin.strip():
        return {}
    try:
        data = jsontext.loads(stdin.decode())
    except ValueError as exc:  # UnicodeDecodeError too
        raise CniError(DECODE, "cannot decode the network configuration", str(exc)) from None
    if not isinstance(data, dict):
        raise CniError(DECODE, "cannot decode the network configuration", "expected an object")
    return data


def _check_keys(config: dict[str, object]) -> None:
    for key in ("name", "type"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise CniError(BAD_CONFIG, "invalid network configuration", f'"{key}" is required')
    for key, value in config.items():
        if key not in STANDARD_KEYS and key not in PLUGIN_KEYS:
            raise CniError(
                UNSUPPORTED_FIELD, "unsupported field in network configuration", f"{key}={value!r}"
            )


# -- answers ------------------------------------------------------------------------------
def version_result(version: str) -> dict[str, object]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED)}


def result(
    version: str,
    interfaces: list[dict[str, object]],
    ips: list[dict[str, object]],
    routes: list[dict[str, object]],
    dns: dict[str, object] | None = None,
) -> dict[str, object]:
    """An ADD result in ``version``'s shape: before 1.0.0 every ``ips`` entry names its IP
    version; empty optional fields are left out."""
    if _key(version) < (1, 0, 0):
        ips = [{"version": "4", **ip} for ip in ips]
    out: dict[str, object] = {"cniVersion": version, "interfaces": interfaces, "ips": ips}
    if routes:
        out["routes"] = routes
    if dns:
        out["dns"] = dns
    return out
