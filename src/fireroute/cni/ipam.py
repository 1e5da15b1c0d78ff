"""Delegation to an IPAM plugin (the configuration's ``ipam`` section), as the spec describes
it: the plugin named by ``ipam.type`` is found on CNI_PATH and run with the same environment
(CNI_COMMAND as the caller's) and the same network configuration on stdin; its ADD answers
with the addresses, its DEL releases them."""

from __future__ import annotations

import os

from fireroute import jsontext
from fireroute.cni.protocol import (
    BAD_CONFIG,
    GENERIC,
    INCOMPATIBLE,
    IPAM_RESULT,
    CniError,
    Request,
    check,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def section(req: Request) -> dict[str, object] | None:
    """The ``ipam`` section: an object naming a plugin (a file name, no path), as the
    request's CONFIG checked."""
    ipam = req.config.get("ipam")
    assert ipam is None or isinstance(ipam, dict)
    return ipam


def binary(req: Request, kind: str) -> str:
    for d in req.path:
        path = os.path.join(d, kind)
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
    raise CniError(
        BAD_CONFIG,
        "invalid network configuration",
        f'IPAM plugin "{kind}" not found in CNI_PATH ({":".join(req.path) or "empty"})',
    )


def call(
    req: Request, env: Mapping[str, str], stdin: bytes, command: str, **extra: str
) -> dict[str, object]:
    """Run the IPAM plugin's ``command``; its answer (an empty dict for none). Its CNI error
    becomes ours, code and message kept. An IPAM plugin that does not know the configuration's
    version is asked again in the newest version it knows (0.4.0 or later), with the same
    configuration otherwise (the spec's GC comes in 1.1.0; Debian's host-local knows 1.0.0)."""
    try:
        return _call(req, env, stdin.decode(), command, extra)
    except CniError as exc:
        if exc.code != INCOMPATIBLE:
            raise
        older = _older_version(req, env)
        if older is None:
            raise
        conf = jsontext.loads(stdin.decode())
        assert isinstance(conf, dict)
        return _call(req, env, jsontext.dumps({**conf, "cniVersion": older}), command, extra)


def _older_version(req: Request, env: Mapping[str, str]) -> str | None:
    from fireroute.cni.protocol import SUPPORTED, _key

    try:
        answer = _call(req, env, '{"cniVersion": "0.4.0"}', "VERSION", {})
    except CniError:
        return None
    theirs = answer.get("supportedVersions", [])
    common = [v for v in SUPPORTED if isinstance(theirs, list) and v in theirs]
    common = [v for v in common if _key(v) >= (0, 4, 0) and _key(v) < _key(req.version)]
    return max(common, key=_key) if common else None


def _call(
    req: Request, env: Mapping[str, str], stdin: str, command: str, extra: Mapping[str, str]
) -> dict[str, object]:
    from fireroute.kernel.run import run

    ipam = section(req)
    assert ipam is not None
    kind = str(ipam["type"])
    full = {**env, "CNI_COMMAND": command, **extra}
    argv = [binary(req, kind)]
    res = run(argv, stdin, env=full)
    answer: object = {}
    if res.out.strip():
        try:
            answer = jsontext.loads(res.out)
        except ValueError:
            answer = None
    if res.rc != 0:
        if isinstance(answer, dict) and isinstance(answer.get("code"), int):
            msg = f'IPAM plugin "{kind}": {answer.get("msg", "")}'
            raise CniError(int(answer["code"]), msg, str(answer.get("details", "")))
        raise CniError(GENERIC + 3, f'IPAM plugin "{kind}" failed', (res.err or res.out).strip())
    if not isinstance(answer, dict):
        raise CniError(GENERIC + 3, f'IPAM plugin "{kind}" answered no CNI result', res.out[:200])
    return answer


def address(answer: dict[str, object]) -> tuple[str, str]:
    """The first IPv4 address of an IPAM result and its gateway (the result shaped as
    protocol.IPAM_RESULT, or code 103 naming the field that is not). An IPv6 address in it is
    code 7: a VM's IPv6 is a /64 of its own from fireroute's pool (``ipv6``, ``pool6``), which
    an address of a shared IPAM subnet cannot be (its isolation is keyed by the /64)."""
    try:
        check(answer, IPAM_RESULT, "")
    except CniError as exc:
        raise CniError(
            GENERIC + 3, "the IPAM plugin answered a malformed result", exc.details
        ) from None
    ips: list[dict[str, str]] = answer.get("ips", [])  # type: ignore[assignment]
    six = [ip["address"] for ip in ips if ":" in ip["address"]]
    if six:
        raise CniError(
            BAD_CONFIG,
            "invalid network configuration",
            f"the IPAM plugin gave an IPv6 address ({six[0]}): give it IPv4 ranges only; a VM's "
            'IPv6 comes from fireroute\'s own pool ("ipv6": true, "pool6")',
        )
    for ip in ips:
        addr, gw = ip["address"], ip.get("gateway")
        if ":" not in addr:
            if gw is None or ":" in gw:
                raise CniError(GENERIC + 3, "the IPAM result's IPv4 address has no gateway", addr)
            return addr, gw
    raise CniError(GENERIC + 3, "the IPAM result has no IPv4 address", jsontext.dumps(answer)[:200])
