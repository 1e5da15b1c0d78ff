"""Shared helpers of the reliability suite: the kernel as seen from outside fireroute, and the
invariant every test ends on: the kernel holds exactly what ``fireroute ls`` accounts for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from ipaddress import IPv4Network

from tests.conftest import Host

TAG = "fireroute:"
LINK_GROUPS = ("4151", "4152")


def spawn(host: Host, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The real CLI in the host namespace, not waited for (``ip netns exec`` execs python, so
    ``p.pid`` is fireroute's own pid once it has started)."""
    full_env = {**os.environ, "FIREROUTE_STATE": str(host.state), **(env or {})}
    return subprocess.Popen(
        ["ip", "netns", "exec", host.ns, sys.executable, "-m", "fireroute", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def finish(p: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def ls(host: Host) -> list[dict]:
    return json.loads(host.fireroute("ls", "--json").stdout)


def wait_quiescent(host: Host, timeout: float = 20) -> None:
    """Wait until no process is left in the host namespace (an ``ip``/``nft`` child of a killed
    fireroute keeps running after its parent died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = subprocess.run(
            ["ip", "netns", "pids", host.ns], capture_output=True, text=True
        ).stdout.split()
        if not pids:
            return
        time.sleep(0.02)
    raise AssertionError(f"processes still running in {host.ns}: {pids}")


def one_line_error(rc: int, err: str) -> None:
    """A failure explained in one line: non-zero exit, one line, no traceback."""
    assert rc != 0
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), repr(err)
    assert err.startswith("fireroute: ") or err.startswith("usage:"), repr(err)


# -- the kernel, as observed ----------------------------------------------------------------
def our_links(host: Host) -> dict[str, dict]:
    """Links fireroute could have made: named fr-*, in its link groups, or carrying its alias."""
    out = host.run("ip", "-j", "-d", "addr", "show").stdout
    return {
        d["ifname"]: d
        for d in json.loads(out)
        if d["ifname"].startswith("fr-")
        or str(d.get("group")) in LINK_GROUPS
        or str(d.get("ifalias", "")).startswith(TAG)
    }


def inet_addrs(link: dict) -> list[str]:
    return sorted(
        f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a["family"] == "inet"
    )


def table_blocks(text: str) -> dict[str, str]:
    """``nft list ruleset`` text split into its top-level tables: {"table ip x": text}."""
    blocks: dict[str, str] = {}
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        current.append(line)
        if line.rstrip("\n") == "}":
            head = current[0].rstrip(" {\n")
            blocks[head] = "".join(current)
            current = []
    assert not "".join(current).strip(), f"unparsed ruleset tail: {current!r}"
    return blocks


def our_tables(host: Host) -> list[str]:
    """Names of the ip tables carrying fireroute's table comment."""
    out = []
    for head, text in table_blocks(host.nft_text()).items():
        lines = text.splitlines()
        if (
            head.startswith("table ip ")
            and len(lines) > 1
            and lines[1].strip() == ('comment "fireroute"')
        ):
            out.append(head.split()[2])
    return out


def _val(v: object) -> tuple[str, ...]:
    if isinstance(v, dict) and "concat" in v:
        return tuple(str(x) for x in v["concat"])
    return (str(v),)


def set_elements(host: Host, table: str) -> dict[str, set[tuple[tuple[str, ...], str]]]:
    """{set: {(value, comment)}} for one ip table."""
    out: dict[str, set[tuple[tuple[str, ...], str]]] = {}
    for item in host.nft():
        s = item.get("set")
        if not s or s["table"] != table or s["family"] != "ip":
            continue
        elems = out.setdefault(s["name"], set())
        for e in s.get("elem", []):
            if isinstance(e, dict) and "elem" in e:
                elems.add((_val(e["elem"]["val"]), str(e["elem"].get("comment", ""))))
            else:
                elems.add((_val(e), ""))
    return out


def tagged_rules(host: Host) -> list[str]:
    return [r for r in host.iptables_rules() if TAG in r]


def rule_owner(rule: str) -> str:
    """The VM name (or "shared") a tagged rule carries: fireroute:<state id>:<vm>."""
    after = rule.split("--comment ", 1)[1].split(" ", 1)[0].strip('"')
    return after[len(TAG) :].split(":")[-1]


# -- the invariant ---------------------------------------------------------------------------
def assert_consistent(host: Host, forwarding_when_empty: str = "0", check: bool = True) -> list:
    """Kernel == state: every lease active, blocks/taps distinct and non-overlapping, each lease's
    tap, addresses, alias, set elements and iptables rules present, and nothing else of ours."""
    vms = ls(host)
    assert [v["name"] for v in vms if v["state"] != "active"] == []
    nets = sorted(
        (IPv4Network(f"{v['tap_ip']}/{v['prefix']}", strict=False) for v in vms),
        key=lambda n: int(n.network_address),
    )
    for a, b in zip(nets, nets[1:], strict=False):
        assert not a.overlaps(b), f"duplicate/overlapping blocks {a} {b}"
    assert len({v["tap"] for v in vms}) == len(vms)
    assert len({v["name"] for v in vms}) == len(vms)

    links = our_links(host)
    assert set(links) == {v["tap"] for v in vms}, (
        f"links without a lease: {sorted(set(links) - {v['tap'] for v in vms})[:10]}, "
        f"leases without a link: {sorted({v['tap'] for v in vms} - set(links))[:10]}"
    )
    for v in vms:
        link = links[v["tap"]]
        assert inet_addrs(link) == [f"{v['tap_ip']}/{v['prefix']}"], (v["name"], link)
        assert "UP" in link["flags"], v["name"]
        assert link.get("ifalias") == TAG + v["owner_tag"]

    nft_vms = [v for v in vms if v["backend"] == "nft"]
    tables = our_tables(host)
    assert sorted(tables) == sorted({v["table"] for v in nft_vms}), tables
    for table in tables:
        in_table = [v for v in nft_vms if v["table"] == table]
        want = {
            "masq": {((v["guest_ip"], v["uplink"]), v["owner_tag"]) for v in in_table},
            "egress": {((v["tap"], v["uplink"]), v["owner_tag"]) for v in in_table},
            "taps": {((v["tap"],), v["owner_tag"]) for v in in_table},
            "vms": {((v["tap"], v["guest_ip"]), v["owner_tag"]) for v in in_table},
        }
        got = set_elements(host, table)
        assert {k: got.get(k, set()) for k in want} == want
        names = {v["owner_tag"] for v in in_table}
        for other, elems in got.items():  # sets of later features: no element without a lease
            if other not in want:
                assert {c for _val, c in elems} <= names, (other, elems)

    ipt_vms = [v for v in vms if v["backend"] == "iptables"]
    rules = tagged_rules(host)
    shared = [r for r in rules if rule_owner(r) == "shared"]
    assert len(shared) == (1 if ipt_vms else 0), shared
    per_vm: dict[str, list[str]] = {}
    for r in rules:
        if rule_owner(r) != "shared":
            per_vm.setdefault(rule_owner(r), []).append(r)
    assert set(per_vm) == {v["name"] for v in ipt_vms}, sorted(
        set(per_vm) ^ {v["name"] for v in ipt_vms}
    )[:10]
    for v in ipt_vms:
        got = per_vm[v["name"]]  # the rule set grows with features; these two are the core
        assert any(f"-s {v['guest_ip']}/32" in r and "MASQUERADE" in r for r in got), got
        assert any(f"-i {v['tap']}" in r and "-j ACCEPT" in r for r in got), got
        assert all(f" {v['tap']} " in r or f"{v['guest_ip']}/32" in r for r in got), got

    if not vms:
        assert host.forwarding() == forwarding_when_empty
    if check:
        p = host.fireroute("check", "--json", check=False)
        assert p.returncode == 0, p.stdout + p.stderr
    return vms


def assert_nothing_ours(host: Host, forwarding: str = "0") -> None:
    assert ls(host) == []
    assert our_links(host) == {}
    assert our_tables(host) == []
    assert tagged_rules(host) == []
    assert host.forwarding() == forwarding
