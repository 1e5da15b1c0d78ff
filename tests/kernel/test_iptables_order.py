"""The order of the iptables backend's rules, with real packets: a VM's metadata DROP must
come before its ACCEPT, the shared conntrack ACCEPT before every VM's rules. A rule deleted,
or moved out of order by hand, is reported by ``check`` naming the VM; ``restore`` writes the
VM's block again whole, in order, where it stood (``--dry-run`` prints exactly what it runs),
and the guest's packets are judged as before. The nft backend's VM beside them is untouched.

Guests are veths named like their taps (tests/kernel/test_isolation.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.conftest import Host, sh
from tests.kernel.test_isolation import Lab

pytestmark = pytest.mark.privileged

METADATA = "169.254.169.254"


@pytest.fixture
def lab(host: Host) -> Iterator[Lab]:
    lab = Lab(host)
    # the "internet" answers on 203.0.113.1:80 and plays a cloud metadata service too
    sh("ip", "-n", host.inet, "addr", "add", f"{METADATA}/32", "dev", "lo")
    sh("ip", "-n", host.inet, "route", "add", "172.16.0.0/16", "via", "203.0.113.2")
    lab.serve(host.inet, "203.0.113.1:80", f"{METADATA}:80")
    try:
        yield lab
    finally:
        lab.close()


def tagged(host: Host, vm: str, chain: str = "FORWARD") -> list[str]:
    """A VM's rules in one chain, in chain order (counters left out)."""
    rules = [r.replace('"', "") for r in host.iptables_rules()]
    return [r for r in rules if r.startswith(f"-A {chain} ") and f":{vm} -j " in r]


def metadata_drops(host: Host, tap: str) -> int:
    """Packets counted by the VM's metadata DROP."""
    out = host.run("iptables-nft-save", "-c", "-t", "filter").stdout
    for line in out.splitlines():
        if f"-d {METADATA}/32 -i {tap} " in line and line.endswith("-j DROP"):
            return int(re.match(r"\[(\d+):", line).group(1))  # type: ignore[union-attr]
    raise AssertionError(f"no metadata DROP for {tap}:\n{out}")


def metadata_rule(host: Host, tap: str) -> str:
    rules = [r.replace('"', "") for r in host.iptables_rules()]
    return next(r for r in rules if f"-d {METADATA}/32 -i {tap} " in r)


STAND_IN = '" is a veth link, not a tun'
"""what check rightly says of each veth standing in for a tap (restore cannot change it)"""


def check(host: Host) -> tuple[int, str]:
    """check's exit and its lines, the veth stand-ins' own line left out."""
    p = host.fireroute("check", "--json", check=False)
    doc = json.loads(p.stdout)
    lines = []
    for vm, problems in doc["vms"].items():
        left = [x for x in problems if STAND_IN not in x]
        lines.append(f"{vm}: " + ("; ".join(left) or "ok"))
    lines += [f"{what}: " + ("; ".join(ps) or "ok") for what, ps in doc["shared"].items()]
    lines += [f"orphan: {o}" for o in doc["orphans"]]
    bad = any(not x.endswith(": ok") for x in lines)
    assert p.returncode == (1 if bad or STAND_IN in p.stdout else 0)
    return int(bad), "\n".join(lines)


def restore(host: Host) -> str:
    """restore --dry-run, then restore: the commands printed are the ones run (less the
    ``ip link set <stand-in> up`` restore runs for each veth that is not a tap)."""
    dry = host.fireroute("restore", "--dry-run").stdout
    ran = json.loads(host.fireroute("restore", "--json").stdout)["commands"]
    assert dry == ran
    return "\n".join(
        x for x in ran.splitlines() if not re.fullmatch(r"ip link set (dev )?fr-[abn] .*up", x)
    )


def guarded(lab: Lab, ns: str, tap: str) -> None:
    """The guest's metadata traffic is dropped (and counted); the internet answers it."""
    before = metadata_drops(lab.host, tap)
    assert lab.connect(ns, METADATA, 80).startswith("FAIL")
    assert metadata_drops(lab.host, tap) > before
    assert lab.connect(ns, "203.0.113.1", 80) == "hello 203.0.113.2"  # positive control


@pytest.fixture
def guests(lab: Lab) -> tuple[str, str, str]:
    """Two iptables VMs and an nft one; the first's metadata path proven guarded."""
    ns, rec = lab.guest("a", "--backend", "iptables")
    lab.guest("b", "--backend", "iptables")
    nft_ns, _ = lab.guest("n")
    for tap in ("fr-a", "fr-b", "fr-n"):  # as on the taps they stand in for
        lab.host.run("sysctl", "-qw", f"net.ipv6.conf.{tap}.disable_ipv6=1")
    guarded(lab, ns, rec["host_dev"])
    assert lab.connect(nft_ns, METADATA, 80).startswith("FAIL")
    rc, out = check(lab.host)
    assert rc == 0, out
    return ns, rec["host_dev"], nft_ns


def healed(lab: Lab, guests: tuple[str, str, str], order: list[str], others: list[str]) -> None:
    ns, tap, nft_ns = guests
    host = lab.host
    nft_table = ("nft", "list", "table", "ip", "firecracker")
    nft_before = host.run(*nft_table).stdout
    ran = restore(host)
    assert host.run(*nft_table).stdout == nft_before  # the nft VM's table: untouched
    assert ":n -j " not in ran and "nft " not in ran, ran  # nothing of the nft VM
    guarded(lab, ns, tap)  # the packets first: metadata dropped and counted, the rest passes
    rc, out = check(host)
    assert rc == 0, out
    assert tagged(host, "a") == order  # the whole block, in the rendered order
    assert tagged(host, "b") == others  # the other VM's block untouched
    forward = [r.replace('"', "") for r in host.iptables_rules() if r.startswith("-A FORWARD")]
    shared = next(i for i, r in enumerate(forward) if "fireroute:shared" in r)
    vms = [i for i, r in enumerate(forward) if ":a -j " in r or ":b -j " in r]
    assert len(vms) == len(order) + len(others) and shared < min(vms), forward
    assert "iptables-nft-restore --noflush" in ran and "\n-I " in ran, ran  # in place
    assert lab.connect(nft_ns, METADATA, 80).startswith("FAIL")  # the nft VM: as it was
    assert lab.connect(nft_ns, "203.0.113.1", 80) == "hello 203.0.113.2"
    assert restore(host) == ""  # a second run: nothing to do


def test_deleted_metadata_drop_is_put_back_before_the_accept(lab: Lab, guests):
    ns, tap, _ = guests
    host = lab.host
    order, others = tagged(host, "a"), tagged(host, "b")
    rule = metadata_rule(host, tap)
    assert order[0] == rule  # rendered first
    host.run("iptables-nft", "-D", *rule.split()[1:])
    assert lab.connect(ns, METADATA, 80) == "hello 203.0.113.2"  # the damage is real
    rc, out = check(host)
    assert rc == 1 and f"iptables rule missing: {rule}" in out, out
    healed(lab, guests, order, others)


def test_metadata_drop_reappended_by_hand_is_out_of_order(lab: Lab, guests):
    ns, tap, _ = guests
    host = lab.host
    order, others = tagged(host, "a"), tagged(host, "b")
    rule = metadata_rule(host, tap)
    host.run("iptables-nft", "-D", *rule.split()[1:])
    host.run("iptables-nft", "-A", *rule.split()[1:])  # every rule there: a set says ok
    assert lab.connect(ns, METADATA, 80) == "hello 203.0.113.2"  # after the ACCEPT: passes
    rc, out = check(host)
    line = next(x for x in out.splitlines() if x.startswith("a: "))
    assert rc == 1 and 'iptables rules of vm "a" in FORWARD are out of order: ' in line, out
    assert f'"{rule}" comes after' in line and "missing" not in line
    assert next(x for x in out.splitlines() if x.startswith("b: ")) == "b: ok"
    healed(lab, guests, order, others)


def test_shared_rule_moved_below_the_vms_is_put_back_above(lab: Lab, guests):
    ns, _, _ = guests
    host = lab.host
    order, others = tagged(host, "a"), tagged(host, "b")
    shared = next(r for r in host.iptables_rules() if "fireroute:shared" in r).replace('"', "")
    host.run("iptables-nft", "-D", *shared.split()[1:])
    host.run("iptables-nft", "-A", *shared.split()[1:])
    # the replies meet the VM's "-o tap DROP" first: the guest's connection fails
    assert lab.connect(ns, "203.0.113.1", 80).startswith("FAIL")
    rc, out = check(host)
    assert rc == 1 and "shared iptables rule is out of order" in out, out
    healed(lab, guests, order, others)


def test_input_rules_out_of_order(lab: Lab, guests):
    """The host side: a VM's INPUT catch-all DROP moved above its ping ACCEPT."""
    ns, tap, _ = guests
    host = lab.host
    order, others = tagged(host, "a"), tagged(host, "b")
    inputs = tagged(host, "a", "INPUT")
    gw = host.addrs(tap)[0].split("/")[0]
    ping = ["ip", "netns", "exec", ns, "busybox", "ping", "-c1", "-W2", gw]
    assert sh(*ping, check=False).returncode == 0  # positive control
    catch_all = inputs[-1]
    host.run("iptables-nft", "-D", *catch_all.split()[1:])
    host.run("iptables-nft", "-I", "INPUT", *catch_all.split()[2:])
    assert sh(*ping, check=False).returncode != 0
    rc, out = check(host)
    assert rc == 1 and 'iptables rules of vm "a" in INPUT are out of order' in out, out
    healed(lab, guests, order, others)
    assert tagged(host, "a", "INPUT") == inputs
    assert sh(*ping, check=False).returncode == 0
