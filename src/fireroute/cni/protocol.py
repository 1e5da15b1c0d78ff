"""The CNI protocol (spec 1.1, ``shared/reference/cni/SPEC.md``), as data: what a runtime asks
(environment and stdin) and what a plugin answers (a result in the asked version, or an error
object), with no kernel work. The plugin's verbs use this to read a request and to write
their answers; everything here is checked before anything is changed.

Versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0 (a result's ``ips`` carry ``"version"``, "4"
or "6", before 1.0.0; CHECK exists from 0.4.0, GC and STATUS from 1.1.0).
"""

from __future__ import annotations

from fireroute import jsontext, request
from fireroute.cni import MAX_STDIN  # (defined there: the program's entry reads it too)
from fireroute.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TypeGuard

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
    "ipv6": "ipv6",
    "pool6": "pool6",
    "state": None,
    "mtu": None,
    "tapName": None,
    "daemonSocket": None,  # handoff.py: the plugin's calls go to that daemon
    "daemonFallback": None,
}


MAX_DEPTH = 32
"""the deepest nesting of objects and lists a configuration may have (the spec's deepest,
``prevResult.ips[0]``, is 3): deeper is refused, code 7"""

# -- the configuration's shape, as data -----------------------------------------------------
# A shape is a kind's name (a key of KINDS), a one-item list (a list of that shape), or a dict
# (an object: each key's shape; a key ending in "!" must be there; "*" is the shape of every
# other key, which is otherwise let through unread). check() walks a value along its shape,
# once per request, and names the first field that does not fit.


def _ip(value: object) -> bool:
    from ipaddress import ip_address

    if not isinstance(value, str):
        return False
    try:
        ip_address(value)
    except ValueError:
        return False
    return True


def _cidr(value: object) -> bool:
    from ipaddress import ip_interface

    if not isinstance(value, str) or "/" not in value:
        return False
    try:
        ip_interface(value)
    except ValueError:
        return False
    return True


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _uint(value: object) -> bool:
    return _int(value) and value >= 0


KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "text": (lambda v: isinstance(v, str), "a string"),
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "int": (_int, "an integer"),
    "uint": (_uint, "an integer of 0 or more"),
    "port": (lambda v: _int(v) and 1 <= v <= 65535, "a port number (1-65535)"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "ip": (_ip, "an IP address"),
    "host_ip": (lambda v: v == "" or _ip(v), 'an IP address or ""'),
    "cidr": (_cidr, "an address with a prefix length (such as 10.0.0.2/24)"),
    "path": (lambda v: isinstance(v, str) and v.startswith("/"), "an absolute path"),
    "proto": (lambda v: isinstance(v, str) and v.lower() in ("tcp", "udp"), "tcp or udp"),
    "plugin": (
        lambda v: isinstance(v, str) and v != "" and "/" not in v and not v.startswith("."),
        "a plugin's file name",
    ),
}
DNS = {"nameservers": ["ip"], "domain": "text", "search": ["text"], "options": ["text"]}
RESULT = {  # a result as the spec defines it: what prevResult holds
    "cniVersion": "text",
    "interfaces": [
        {"name!": "name", "mac": "text", "mtu": "uint", "sandbox": "text", "socketPath": "text"}
    ],
    "ips": [{"address!": "cidr", "gateway": "ip", "interface": "uint", "version": "text"}],
    "routes": [
        {
            "dst!": "cidr",
            "gw": "ip",
            "mtu": "uint",
            "advmss": "uint",
            "priority": "uint",
            "table": "uint",
            "scope": "uint",
        }
    ],
    "dns": DNS,
}
IPAM_RESULT = {  # what a delegated IPAM plugin answers (the spec: a result without interfaces)
    "ips": [{"address!": "cidr", "gateway": "ip"}],
    "routes": RESULT["routes"],
    "dns": DNS,
}
PORT_MAPPING = {
    "hostPort!": "port",
    "containerPort!": "port",
    "protocol": "proto",
    "hostIP": "host_ip",
}
CONFIG: dict[str, object] = {  # every key of a network configuration fireroute reads
    "cniVersion": "text",
    "cniVersions": ["text"],
    "name!": "name",
    "type!": "name",
    "args": "object",
    "ipam": {"type!": "plugin"},
    "dns": DNS,
    "prevResult": RESULT,
    "runtimeConfig": {"portMappings": [PORT_MAPPING]},
    "capabilities": {"*": "bool"},
    "disableCheck": "bool",
    "disableGC": "bool",
    "cni.dev/valid-attachments": [{"containerID!": "name", "ifname!": "name"}],
    # fireroute's own keys (PLUGIN_KEYS): their values are then checked as every door's
    "pool": "text",
    "blockSize": "int",
    "uplink": "text",
    "backend": "text",
    "table": "text",
    "allowPeers": "bool",
    "allowMetadata": "bool",
    "allowHostPorts": ["text"],
    "ipv6": "bool",
    "pool6": "text",
    "state": "path",
    "mtu": "int",
    "tapName": "text",
    "daemonSocket": "path",
    "daemonFallback": "bool",
}
CONFIG_NEEDS = {  # keys of the configuration a command requires (the spec's "must")
    "GC": ("cni.dev/valid-attachments",),
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
            if "runtimeConfig" in self.config:
                self.config["runtimeConfig"] = go_keys(
                    self.config["runtimeConfig"], CONFIG["runtimeConfig"]
                )
            check(self.config, CONFIG, "")
            for key in CONFIG_NEEDS.get(command, ()):
                if key not in self.config:
                    raise CniError(
                        BAD_CONFIG,
                        "invalid network configuration",
                        f'{command} needs "{key}" (nothing was changed)',
                    )

    def options(self) -> dict[str, object]:
        """The configuration's fireroute keys as the options of ``up`` (checked by
        :func:`fireroute.request.options`, as every door's)."""
        out: dict[str, object] = {}
        for key, field in PLUGIN_KEYS.items():
            if field is not None and key in self.config:
                out[field] = self.config[key]
        dns = self.config.get("dns")
        if isinstance(dns, dict) and dns.get("nameservers"):
            out["dns"] = [s for s in dns["nameservers"] if ":" not in s]
        try:
            request.options(out)
        except UsageError as exc:
            raise CniError(BAD_CONFIG, "invalid network configuration", str(exc)) from None
        return out


def go_keys(value: object, shape: object) -> object:
    """``value`` (what a runtime supplied: ``runtimeConfig``, filled from the capabilities)
    with its object keys read as Go's JSON decoding reads them into a struct: a key that is
    not one of ``shape``'s names but matches one case-insensitively (containerd 1.6 sends
    ``HostPort``, ``ContainerPort``, ``Protocol``, ``HostIP``) becomes that name; when two
    spellings of one name are given, the later wins, as in Go. Other keys are kept as they
    are; values are checked afterwards against ``shape`` like every other field."""
    if isinstance(value, list) and isinstance(shape, list):
        return [go_keys(item, shape[0]) for item in value]
    if not (isinstance(value, dict) and isinstance(shape, dict)):
        return value
    names: dict[str, object] = {k.rstrip("!"): sub for k, sub in shape.items() if k != "*"}
    folded = {known.casefold(): known for known in names}
    out: dict[str, object] = {}
    for key, item in value.items():
        name = str(key)  # JSON's keys are strings
        if name not in names:
            name = folded.get(name.casefold(), name)
        out[name] = go_keys(item, names.get(name))  # a later spelling of a name wins
    return out


def port_mappings(config: dict[str, object]) -> list[str]:
    """``runtimeConfig.portMappings`` (the CNI convention a runtime fills from ``-p``, when the
    plugin's ``capabilities`` has ``portMappings``) as ``--publish`` specs: an empty host
    address, ``0.0.0.0`` and ``::`` are every address of the host (one spec for a port mapped
    for both families); an IPv6 one is published on that address when the attachment has IPv6
    (``"ipv6": true``; ``::1`` is refused as ``--publish``'s), else left out (the guest has no
    IPv6 address to forward it to)."""
    runtime = config.get("runtimeConfig") or {}
    six = config.get("ipv6") is True
    out: list[str] = []
    for m in runtime.get("portMappings", []):  # type: ignore[attr-defined]
        host, guest = m["hostPort"], m["containerPort"]  # checked by CONFIG
        proto, addr = m.get("protocol", "tcp"), m.get("hostIP", "")
        if ":" in addr and not six:
            continue
        at = "" if addr in ("", "0.0.0.0", "::") else f"[{addr}]:" if ":" in addr else f"{addr}:"
        spec = f"{at}{host}:{guest}/{proto.lower()}"
        if spec not in out:
            out.append(spec)
    return out


def prev_result(config: dict[str, object]) -> tuple[list[dict], list[dict]]:
    """The interfaces and IP entries of ``prevResult`` (a plugin before this one in the
    list), checked: an object with lists of objects, each IP's ``interface`` an index into
    the interfaces; ``version`` keys of IP entries dropped (the answer's version decides).
    Each field's type is CONFIG's (checked when the request was read)."""
    prev = config.get("prevResult")
    if prev is None:
        return [], []
    assert isinstance(prev, dict)
    interfaces, ips = prev.get("interfaces", []), prev.get("ips", [])
    for n, ip in enumerate(ips):
        at = ip.get("interface")
        if at is not None and not at < len(interfaces):
            raise CniError(
                BAD_CONFIG,
                "invalid network configuration",
                f'"prevResult.ips[{n}].interface" is {at}: prevResult has '
                f"{len(interfaces)} interfaces",
            )
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
    if len(stdin) > MAX_STDIN:
        raise CniError(
            BAD_CONFIG,
            "invalid network configuration",
            f"more than {MAX_STDIN} bytes on stdin",
        )
    if not stdin.strip():
        return {}
    try:
        data = jsontext.loads(stdin.decode())
    except ValueError as exc:  # UnicodeDecodeError too
        raise CniError(DECODE, "cannot decode the network configuration", str(exc)) from None
    except RecursionError:  # nested deeper than the parser goes
        data = None
    if data is None or _deeper(data, MAX_DEPTH):
        raise CniError(
            BAD_CONFIG,
            "invalid network configuration",
            f"objects and lists nested deeper than {MAX_DEPTH} levels",
        )
    if not isinstance(data, dict):
        raise CniError(DECODE, "cannot decode the network configuration", "expected an object")
    return data


def _deeper(data: object, limit: int) -> bool:
    """Does ``data`` nest objects and lists more than ``limit`` deep (without recursion)?"""
    level: list[object] = [data]
    for _ in range(limit):
        level = [
            v
            for x in level
            if isinstance(x, dict | list)
            for v in (x.values() if isinstance(x, dict) else x)
            if isinstance(v, dict | list)
        ]
        if not level:
            return False
    return True


def check(value: object, shape: object, where: str) -> None:
    """``value`` has ``shape`` (see CONFIG), or a CniError (code 7) naming the first field
    (``where``, such as ``prevResult.ips[0].address``) that has not."""
    if isinstance(shape, str):
        fits, want = KINDS[shape]
        if not fits(value):
            raise _misfit(where, want, value)
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise _misfit(where, "a list", value)
        for n, item in enumerate(value):
            check(item, shape[0], f"{where}[{n}]")
    else:
        assert isinstance(shape, dict)
        if not isinstance(value, dict):
            raise _misfit(where, "an object", value)
        at = f"{where}." if where else ""
        for key in shape:
            if key.endswith("!") and key[:-1] not in value:
                raise CniError(
                    BAD_CONFIG, "invalid network configuration", f'"{at}{key[:-1]}" is required'
                )
        rest = shape.get("*")
        for key, item in value.items():
            sub = shape.get(key, shape.get(f"{key}!", rest))
            if sub is not None:
                check(item, sub, f"{at}{key}")


def _misfit(where: str, want: str, value: object) -> CniError:
    if isinstance(value, dict | list):
        got = "an object" if isinstance(value, dict) else "a list"
    elif isinstance(value, str):
        got = jsontext.dumps(value if len(value) <= 40 else value[:40] + "...")
    elif isinstance(value, bool) or value is None:
        got = jsontext.dumps(value)
    else:  # a number (a huge one is not printed)
        got = repr(value) if not isinstance(value, int) or abs(value) < 10**20 else "a huge number"
    return CniError(
        BAD_CONFIG, "invalid network configuration", f'"{where}" must be {want}, not {got}'
    )


def _check_keys(config: dict[str, object]) -> None:
    for key, value in config.items():
        if key not in STANDARD_KEYS and key not in PLUGIN_KEYS:
            raise CniError(
                UNSUPPORTED_FIELD,
                "unsupported field in network configuration",
                f"{key}={value!r}"[:120],
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
    version (by its address: "6" for an IPv6 one); empty optional fields are left out."""
    if _key(version) < (1, 0, 0):
        ips = [{"version": "6" if ":" in str(ip["address"]) else "4", **ip} for ip in ips]
    out: dict[str, object] = {"cniVersion": version, "interfaces": interfaces, "ips": ips}
    if routes:
        out["routes"] = routes
    if dns:
        out["dns"] = dns
    return out
