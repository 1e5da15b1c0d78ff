"""The ``fireroute`` program as a CNI plugin: the door a runtime (containerd, podman,
firecracker-go-sdk, Nomad) uses when it sets ``CNI_COMMAND``. It reads the request
(:mod:`fireroute.cni.protocol`), calls the Python API, and answers. No networking is decided
here: an attachment is a VM of mode ``cni`` in the state file, with every verb (check, gc,
show, ls) of any other VM.

An attachment's VM name is ``cni-`` + the first 12 characters of the container id + ``-`` + 8
hex digits of a digest of (network name, container id, ifname): the same request always names
the same VM, so ADD is idempotent and DEL finds what ADD made without a cache.
"""

from __future__ import annotations

import contextlib
import os
import sys

from fireroute import jsontext
from fireroute.cni import protocol
from fireroute.cni.protocol import GENERIC, CniError
from fireroute.errors import (
    Busy,
    ConflictError,
    FirerouteError,
    MissingTool,
    NotFound,
    PermissionDenied,
    PoolExhausted,
    UsageError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from fireroute.api import Host, Vm

KEY_OF_FLAG = {  # the CLI's spelling of an option, in the network configuration's
    "--" + field.replace("_", "-"): key for key, field in protocol.PLUGIN_KEYS.items() if field
}
KEY_OF_FLAG["--allow-host-port"] = "allowHostPorts"
KEY_OF_FLAG["--publish"] = "runtimeConfig.portMappings"  # (the runtime's port mappings)


def attachment_name(network: str, container: str, ifname: str) -> str:
    from fireroute.addressing import digest

    key = "\0".join((network, container, ifname))
    return f"cni-{container[:12]}-{digest(key)[:8]}"


def main(env: Mapping[str, str] | None = None, stdin: bytes | None = None) -> int:
    env = os.environ if env is None else env
    if stdin is None:
        # one byte over the limit is enough to refuse (protocol.MAX_STDIN), whatever follows
        stdin = b"" if sys.stdin is None else sys.stdin.buffer.read(protocol.MAX_STDIN + 1)
    code, out = answer(env, stdin)
    if out is not None:
        sys.stdout.write(jsontext.dumps(out) + "\n")
    return code


class Served(dict):
    """The environment of a request the daemon runs (``POST /cni``), with its ``host``."""

    host: Host


def answer(
    env: Mapping[str, str], stdin: bytes, host: Host | None = None
) -> tuple[int, dict[str, object] | None]:
    """The exit status and what the plugin prints (None: nothing); with ``host``, the verbs
    run on it (the daemon's), whatever state file the request names."""
    version = "1.1.0"
    try:
        req = protocol.Request(env, stdin)
        version = req.version or version
        if host is not None:
            env = Served(env)
            env.host = host
        out = VERBS[req.command](req, env, stdin)
    except CniError as exc:
        return 1, exc.as_json(version)
    except FirerouteError as exc:
        return 1, _as_cni(exc).as_json(version)
    return 0, out


def _keys(text: str) -> str:
    """A message of the CLI's words with each option named as the configuration's key."""
    for flag in sorted(KEY_OF_FLAG, key=len, reverse=True):  # (--pool6 before --pool)
        text = text.replace(flag, f'"{KEY_OF_FLAG[flag]}"')
    return text


def _as_cni(exc: FirerouteError) -> CniError:
    """One of fireroute's errors as the spec's: a busy state file is "try again later"."""
    text = _keys(str(exc))
    if isinstance(exc, Busy):
        return CniError(protocol.TRY_AGAIN, "the state file is busy", text)
    if isinstance(exc, MissingTool | PermissionDenied):
        return CniError(protocol.UNAVAILABLE, "the plugin cannot run here", text)
    if isinstance(exc, UsageError):
        return CniError(protocol.BAD_CONFIG, "invalid network configuration", text)
    if isinstance(exc, NotFound):
        return CniError(protocol.UNKNOWN_CONTAINER, "unknown container", text)
    if isinstance(exc, ConflictError | PoolExhausted):
        return CniError(GENERIC, "the attachment cannot be made", text)
    return CniError(GENERIC + 1, "the host refused a change", text)


def _host(req: protocol.Request, env: Mapping[str, str]) -> Host:
    if isinstance(env, Served):  # the daemon's
        return env.host
    from fireroute.api import Host

    state = req.config.get("state")  # an absolute path (protocol.CONFIG)
    # in-process, as the daemon: the container namespace's links, sysctls and redirects on a
    # thread inside it, the host's links by rtnetlink, the elements by nf_tables netlink;
    # no process of ip, tc, sysctl, nft or nsenter (bench/RESULTS.md section 17). Quiet: a
    # result carries no warnings, so the reads behind them (iptables-nft's FORWARD policy,
    # an iptables-nft-save process on a table's first attachment) are not made
    path = str(state or env.get("FIREROUTE_STATE") or "") or None
    return Host(state=path, in_process=True, quiet=True)


def _fields(req: protocol.Request) -> dict[str, object]:
    try:
        fields = req.options()
    except CniError as exc:  # (checked as the CLI's options: named as the keys)
        raise CniError(exc.code, exc.msg, _keys(exc.details)) from None
    fields.update(
        mode="cni",
        netns=req.netns,
        container=req.container,
        ifname=req.ifname,
        network=str(req.config["name"]),
    )
    for key, field in (("tapName", "tap"), ("mtu", "mtu")):
        if key in req.config:
            fields[field] = req.config[key]
    ports = protocol.port_mappings(req.config)
    if ports:
        fields["publish"] = ports
    return fields


def _name(req: protocol.Request) -> str:
    return attachment_name(str(req.config["name"]), req.container, req.ifname)


def add(req: protocol.Request, env: Mapping[str, str], stdin: bytes) -> dict[str, object]:
    if not req.netns.startswith("/"):
        raise CniError(protocol.BAD_ENV, "invalid CNI_NETNS", f"{req.netns!r}: expected a path")
    from fireroute import request
    from fireroute.cni import ipam

    delegated = ipam.section(req) is not None
    fields = _fields(req)
    prev = protocol.prev_result(req.config)  # checked before anything changes
    host = _host(req, env)
    release = False
    if delegated:  # the address comes from the IPAM plugin
        try:
            request.options(fields)  # every check that needs no address, before it is asked
        except UsageError as exc:
            raise _as_cni(exc) from None
        before = _existing(host, _name(req))
        if before is not None:  # up already: its address, without asking again
            fields["guest_ip"] = f"{before.guest_ip}/{before.prefix}"
            fields["gateway"] = before.gateway
        else:  # released again if this ADD makes nothing (a malformed answer too)
            answer = ipam.call(req, env, stdin, "ADD")
            release = True
    try:
        if release:
            fields["guest_ip"], fields["gateway"] = ipam.address(answer)
        vm = host.up(_name(req), skip_conflicts=False, **fields)  # the request model checks them
    except BaseException:
        if release:
            with contextlib.suppress(CniError, OSError):
                ipam.call(req, env, stdin, "DEL")
        raise
    return _result(req, vm, prev)


def _existing(host: Host, name: str) -> Vm | None:
    try:
        return host.get(name)
    except NotFound:
        return None


def _result(
    req: protocol.Request, vm: Vm, prev: tuple[list[dict], list[dict]]
) -> dict[str, object]:
    """The result firecracker-go-sdk reads: the host veth, the namespace's veth and tap, and
    the VM's interface (named as the tap, sandbox the container id, mac the guest's)."""
    interfaces, ips = prev  # a plugin before this one: its interfaces and addresses stay
    base = len(interfaces)
    macs = vm.link_macs
    interfaces += [
        {"name": vm.host_dev, "mac": macs["host"]},
        {"name": req.ifname, "mac": macs["veth"], "sandbox": req.netns},
        {"name": vm.tap, "mac": macs["tap"], "sandbox": req.netns},
        {"name": vm.tap, "mac": vm.mac.lower(), "sandbox": req.container},
    ]
    # the guest's address twice: on the namespace's veth (CNI_IFNAME), where the plugins
    # chained after this one (portmap, bandwidth, firewall) look for the container's address,
    # and on the VM's interface, where firecracker-go-sdk looks (it needs exactly one there)
    address = {"address": f"{vm.guest_ip}/{vm.prefix}", "gateway": str(vm.gateway)}
    ips += [{**address, "interface": base + 1}, {**address, "interface": base + 3}]
    six = vm.ipv6  # its IPv6 address on the namespace's veth only: the VM's interface keeps
    if six is not None:  # the one IPv4 entry the go SDK turns into ip=
        ips.append(
            {
                "address": f"{six['address']}/{six['prefix']}",
                "gateway": str(six["gateway"]),
                "interface": base + 1,
            }
        )
    routes = [{"dst": "0.0.0.0/0", "gw": str(vm.gateway)}]
    # the configuration's dns object, as CNI passes it on (its IPv4 servers are the guest's)
    dns = req.config.get("dns")
    return protocol.result(req.version, interfaces, ips, routes, dns)  # type: ignore[arg-type]


def delete(req: protocol.Request, env: Mapping[str, str], stdin: bytes) -> None:
    from fireroute.cni import ipam

    _host(req, env).down(_name(req))
    if ipam.section(req) is not None:  # released after the links are gone (DEL is idempotent)
        ipam.call(req, env, stdin, "DEL")
    return None


def check(req: protocol.Request, env: Mapping[str, str], stdin: bytes) -> None:
    host = _host(req, env)
    name = _name(req)
    report = host.check(name)
    vms = report.get("vms")
    problems = vms.get(name, []) if isinstance(vms, dict) else []
    if problems:
        raise CniError(
            GENERIC + 2, "the attachment differs from what ADD made", "; ".join(problems)
        )
    return None


def status(req: protocol.Request, env: Mapping[str, str], stdin: bytes) -> None:
    from fireroute.kernel.run import which

    missing = [t for t in ("ip", "nft", "tc", "nsenter") if which(t) is None]
    if missing:
        raise CniError(
            protocol.UNAVAILABLE, "the plugin cannot add", f"missing: {', '.join(missing)}"
        )
    from fireroute.cni import ipam

    if ipam.section(req) is not None:  # the IPAM plugin must be there to ask
        ipam.binary(req, str(ipam.section(req)["type"]))  # type: ignore[index]
    uplink = req.config.get("uplink")
    from fireroute.kernel import observe

    try:
        observe.probe(uplink if isinstance(uplink, str) else None, [], lambda _n: False)
    except FirerouteError as exc:
        raise CniError(
            protocol.UNAVAILABLE, "the plugin cannot add", _as_cni(exc).details
        ) from None
    return None


def gc(req: protocol.Request, env: Mapping[str, str], stdin: bytes) -> None:
    """Every attachment of this network (by name) that the runtime no longer lists goes. The
    list is there and well-formed (protocol.CONFIG_NEEDS, CONFIG): without it, or with an
    entry that names no attachment, every attachment would look stale."""
    valid = req.config["cni.dev/valid-attachments"]
    keep = {(a["containerID"], a["ifname"]) for a in valid}  # type: ignore[attr-defined]
    host = _host(req, env)
    network = str(req.config["name"])
    stale = [
        vm
        for vm in host.list()
        if vm.mode == "cni" and vm.network == network and (vm.container, vm.ifname) not in keep
    ]
    if stale:
        host.down(*(vm.name for vm in stale))
    from fireroute.cni import ipam

    if ipam.section(req) is not None:  # their addresses go back to the IPAM plugin
        for vm in stale:
            extra = {"CNI_CONTAINERID": str(vm.container), "CNI_IFNAME": str(vm.ifname)}
            ipam.call(req, env, stdin, "DEL", **extra)
    return None


def version(req: protocol.Request, env: Mapping[str, str], stdin: bytes) -> dict[str, object]:
    return protocol.version_result(req.version)


VERBS = {"ADD": add, "DEL": delete, "CHECK": check, "STATUS": status, "GC": gc, "VERSION": version}
