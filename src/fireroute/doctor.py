"""``fireroute doctor``: find what silently breaks guest networking on this host, and say what
to do. Read-only: it changes nothing."""

from __future__ import annotations

import os

from fireroute.kernel.run import Child, Done, Runner, launch, read_value, run, which

OK, WARN, FAIL = "ok", "warn", "fail"


class Finding:
    __slots__ = ("level", "what", "advice")

    def __init__(self, level: str, what: str, advice: str = "") -> None:
        self.level = level
        self.what = what
        self.advice = advice

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "what": self.what, "advice": self.advice}


def forward_policy(runner: Runner = run) -> Finding:
    """iptables-nft's filter FORWARD policy: a DROP there (Docker sets it) drops guest traffic
    whatever fireroute's own table accepts, since an accept only ends its own chain."""
    return forward_policy_finding(forward_policy_start(runner))


def forward_policy_start(runner: Runner = run) -> Child | Done | None:
    """Start reading the policy (it runs beside whatever is done meanwhile)."""
    if not which("iptables-nft-save"):
        return None
    return launch(runner, ["iptables-nft-save", "-t", "filter"])


def forward_policy_finding(job: Child | Done | None) -> Finding:
    if job is None:
        return Finding(OK, "iptables-nft not installed: no FORWARD policy to collide with")
    res = job.wait()
    if res.rc != 0:
        return unreadable("iptables-nft's FORWARD policy", res.err)
    for line in res.out.splitlines():
        if line.startswith(":FORWARD ") and line.split()[1] == "DROP":
            return Finding(
                FAIL,
                "iptables-nft filter FORWARD policy is DROP (Docker does this): guest traffic "
                "is dropped there even though fireroute's table accepts it",
                "bring VMs up with --fix-forward-policy (adds tagged ACCEPT rules for their "
                "taps, removed with them)",
            )
    return Finding(OK, "iptables-nft filter FORWARD policy accepts")


def legacy_mix(runner: Runner = run) -> Finding:
    """iptables-legacy's rules and DROP policies: its hooks run beside nf_tables', and a packet
    either drops is dropped, whatever fireroute's rules accept."""
    if not which("iptables-legacy-save"):
        return Finding(OK, "no iptables-legacy rules")
    res = runner(["iptables-legacy-save"], None)
    if res.rc != 0:
        return unreadable("iptables-legacy rules", res.err)
    table, rules, dropping = "", 0, []
    for line in res.out.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and line[1:].split()[1:2] == ["DROP"]:
            dropping.append((table, line[1:].split()[0]))
        rules += line.startswith("-A ")
    if dropping:
        return _legacy_drop(dropping, rules)
    if rules:
        return Finding(
            WARN,
            f"{rules} iptables-legacy rule(s) also filter packets here",
            "legacy and nf_tables rules both apply; check they do not drop guest "
            "traffic (iptables-legacy-save)",
        )
    return Finding(OK, "no iptables-legacy rules")


LEGACY_DROPS = {
    "INPUT": "the guests' traffic to this host",
    "OUTPUT": "this host's traffic to them",
}
"""what a legacy chain's DROP policy drops of guest traffic (any other chain's: the guests'
traffic through this host)"""


def _legacy_drop(dropping: list[tuple[str, str]], rules: int) -> Finding:
    """Legacy built-in chains with a DROP policy: one that sees forwarded packets drops the
    guests' traffic through this host (a fail), INPUT's or OUTPUT's their traffic with it."""
    through = "the guests' traffic through this host"
    found = {LEGACY_DROPS.get(c, through) for _, c in dropping}
    drops = [what for what in (through, *LEGACY_DROPS.values()) if what in found]
    fixes = [
        f"iptables-legacy{'' if t == 'filter' else f' -t {t}'} -P {c} ACCEPT" for t, c in dropping
    ]
    return Finding(
        WARN if through not in drops else FAIL,
        f"iptables-legacy policy DROP on {', '.join(f'{t} {c}' for t, c in dropping)}, beside "
        f"{rules} iptables-legacy rule(s): legacy and nf_tables hooks both run, so what no "
        f"legacy rule accepts of {' and '.join(drops)} is dropped there, whatever fireroute's "
        "rules accept",
        "if nothing on this host relies on the legacy tables, set it back to ACCEPT "
        f"({'; '.join(fixes)}); else accept the guests' traffic there too (--fix-forward-policy "
        "writes iptables-nft rules only)",
    )


def unreadable(what: str, err: str) -> Finding:
    """Something doctor could not read: a failure, never an "ok" it cannot know."""
    first = (err.strip().splitlines() or ["no output"])[0]
    return Finding(FAIL, f"cannot read {what}: {first}", "run fireroute doctor as root")


def ipv6_uplinks(runner: Runner = run) -> list[Finding]:
    """IPv6 forwarding, and each link whose IPv6 default route comes from router
    advertisements with accept_ra=1: switching forwarding on would drop that route, so the
    first ``up --ipv6`` on such an uplink writes accept_ra=2 first and gives the value back
    with the last VM with IPv6 (kernel/uplink6.py); doctor says so, and what it was
    before while fireroute holds it."""
    fwd6 = read_value("/proc/sys/net/ipv6/conf/all/forwarding")
    out = [Finding(OK, f"IPv6 forwarding is {'on' if fwd6 == '1' else 'off'}")]
    held = _accept_ra_held()
    if held is not None:
        out.append(Finding(OK, held))
    res = runner(["ip", "-6", "-j", "route", "show", "default"], None)
    if fwd6 == "1" or res.rc != 0:
        return out
    import json

    for r in json.loads(res.out or "[]"):
        dev = r.get("dev") if isinstance(r, dict) and r.get("protocol") == "ra" else None
        if dev and read_value(f"/proc/sys/net/ipv6/conf/{dev}/accept_ra") == "1":
            out.append(
                Finding(
                    OK,
                    f'the IPv6 default route via "{dev}" comes from router advertisements '
                    "(accept_ra=1): the first up --ipv6 sets its accept_ra to 2 first "
                    "(forwarding would drop the route), and back with the last VM with IPv6",
                )
            )
    return out


def _accept_ra_held() -> str | None:
    """What fireroute's record of the uplink's accept_ra says (kernel/uplink6.py), if any."""
    from fireroute.kernel import uplink6

    found = uplink6.recorded()
    if found is None:
        return None
    uplink, value = found
    return (
        f'fireroute set accept_ra=2 on uplink "{uplink}" (it was {value}) while its VMs with '
        "IPv6 need forwarding; it goes back with the last of them"
    )


def checks(vm_count: int, runner: Runner = run) -> list[Finding]:
    from fireroute.errors import PermissionDenied
    from fireroute.kernel import observe

    try:
        observe.require_net_admin("read the host's ruleset")
    except PermissionDenied as exc:
        return [Finding(FAIL, str(exc), "run fireroute doctor as root")]
    out = [forward_policy(runner), legacy_mix(runner)]
    fwd = read_value("/proc/sys/net/ipv4/ip_forward")
    if vm_count and fwd != "1":
        out.append(
            Finding(
                FAIL,
                f"IPv4 forwarding is off with {vm_count} vm(s) up",
                "run fireroute restore (or something else turned it off)",
            )
        )
    else:
        out.append(Finding(OK, f"IPv4 forwarding is {'on' if fwd == '1' else 'off'}"))
    out += ipv6_uplinks(runner)
    if not os.path.exists("/dev/net/tun"):
        out.append(Finding(FAIL, "/dev/net/tun is missing: no taps can be made", "modprobe tun"))
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if not which(tool):
            out.append(Finding(FAIL, f"{tool} not found", f"apt-get install {pkg}"))
    count = read_value("/proc/sys/net/netfilter/nf_conntrack_count")
    limit = read_value("/proc/sys/net/netfilter/nf_conntrack_max")
    if count and limit and int(limit) and int(count) > 0.8 * int(limit):
        out.append(
            Finding(
                WARN,
                f"conntrack table {count}/{limit} is nearly full: new guest "
                "connections will be dropped",
                "raise net.netfilter.nf_conntrack_max",
            )
        )
    thresh = read_value("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
    if thresh and vm_count * 2 > int(thresh):
        out.append(
            Finding(
                WARN,
                f"neighbour table limit gc_thresh3={thresh} is low for "
                f"{vm_count} vms (each tap holds a neighbour entry)",
                "raise net.ipv4.neigh.default.gc_thresh1/2/3 (e.g. 1024/2048/4096)",
            )
        )
    for iface in ("all", "default"):
        rp = read_value(f"/proc/sys/net/ipv4/conf/{iface}/rp_filter")
        if rp == "1":
            out.append(
                Finding(
                    WARN,
                    f"strict reverse-path filtering (rp_filter=1, {iface})",
                    "fine for NAT taps; bridge and clone setups with asymmetric "
                    "routes need rp_filter=2",
                )
            )
            break
    return out
