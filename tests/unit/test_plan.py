"""Plans print as the commands a person would type; golden files hold them."""

import os
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from fireroute.model import Options, Owner, Vm
from fireroute.plan.steps import Plan, as_commands
from fireroute.want import nft

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def vm(name: str, ordinal: int, **kw) -> Vm:
    net = IPv4Network(f"172.16.0.{4 * ordinal}/30")
    tap = f"fr-{name}"
    v = Vm(name, net, tap, "06:00:AC:10:00:%02X" % (4 * ordinal + 2), "eth0", Options(**kw))
    v.owner = "5ca1ab1e"  # the state file's id, in every owner tag
    return v


def golden(name: str, text: str) -> None:
    """Compare with the golden file. ``FIREROUTE_UPDATE_GOLDEN=1`` (refused under CI) rewrites
    it and fails anyway, so a rewrite is never a pass: review the diff, then rerun."""
    path = GOLDEN / name
    if os.environ.get("FIREROUTE_UPDATE_GOLDEN"):
        assert not os.environ.get("CI"), "golden files are never rewritten in CI"
        path.write_text(text)
        pytest.fail(f"{name} rewritten: review it with git diff, then rerun without the variable")
    assert text == path.read_text(), f"{name} differs from its golden file"


ID = "5ca1ab1e"


def up_steps(vms: list[Vm], exclusive: bool = False) -> list:
    """The steps of the first ``vms`` of a table (nothing there): the compiler's over the
    diff against what they want."""
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import ALL, diff
    from fireroute.want import render

    desired = render.desired(vms, None, ID)
    made = {("ip", "firecracker"), ("ip", "t")} if exclusive else ()
    return compile(diff({}, desired, ALL, ID), made, before="0")


def test_nft_up_plan_of_a_new_table_golden():
    """A table the up makes (created exclusively): only what its VM needs, none of the
    parts of want/tables.py PARTS (issue 23 step 22); a table that may exist gets them all."""
    steps = up_steps([vm("web-1", 0)], exclusive=True)
    (made,) = [s for s in steps if s.tool == "nft"]
    golden("up-nft-new-table.txt", as_commands(Plan([made])))
    (whole,) = [s for s in up_steps([vm("web-1", 0)]) if s.tool == "nft"]
    assert "create table" not in whole.text and "chain out_reject" in whole.text  # (control)


def test_nft_rules_are_constant_per_vm_count():
    def nft_text(vms: list[Vm]) -> str:
        return next(s.text for s in up_steps(vms) if s.tool == "nft")

    one = nft_text([vm("a", 0)])
    many = nft_text([vm(f"v{i}", i) for i in range(50)])
    rules = [line for line in one.splitlines() if line.startswith("add rule")]
    assert rules and rules == [line for line in many.splitlines() if line.startswith("add rule")]
    # per-VM data lives in one element line per set, whatever the count
    element_lines = [line for line in many.splitlines() if line.startswith("add element")]
    assert len(element_lines) == len({line.split()[4] for line in element_lines}) <= len(nft.SETS)


def test_every_up_step_that_creates_has_an_inverse():
    steps = up_steps([vm("a", 0, backend="iptables")]) + up_steps([vm("b", 1)], exclusive=True)
    assert steps[0].text == "tuntap add dev fr-a mode tap user 0"
    assert [u.text for u in steps[0].undo] == ["link del dev fr-a"]
    (table,) = [s for s in steps if s.tool == "nft"]
    assert [u.text for u in table.undo] == [
        "add table ip firecracker\ndelete table ip firecracker\n"
    ]
    rules = [s for s in steps if s.tool == "iptables"]
    assert len(rules) > 5
    for s in rules:  # each rule's undo deletes that rule
        assert [u.text for u in s.undo] == ["-D" + s.text[2:]], s.text


def test_iptables_remove_only_tagged_lines():
    """Of the rules found, a down deletes those tagged for the VMs going, and the shared one
    only with the last of them; another program's, another state file's stay."""
    from fireroute.kernel.read import rule_of
    from fireroute.plan.diff import Scope, diff

    saved = [
        ("filter", "-A FORWARD -i docker0 -j ACCEPT"),
        ("filter", '-A FORWARD -m comment --comment "fireroute:shared" -j ACCEPT'),
        ("filter", f'-A FORWARD -i fr-a -m comment --comment "fireroute:{ID}:a" -j DROP'),
        ("filter", f'-A FORWARD -i fr-ab -m comment --comment "fireroute:{ID}:ab" -j DROP'),
        ("filter", '-A FORWARD -i fr-o -m comment --comment "fireroute:0dd1d0e5:o" -j DROP'),
        ("nat", '-A POSTROUTING -m comment --comment "other:a" -j MASQUERADE'),
    ]
    found = [rule_of(t, line) for t, line in saved]
    current = {(r.kind, r.key): r for r in found if r.owner}
    shared, ab = found[1], found[3]
    gone = diff(current, {k: current[k] for k in ((ab.kind, ab.key), (shared.kind, shared.key))},
                Scope({"a"}), ID)  # fmt: skip
    assert [op.obj.text("delete") for op in gone] == [
        "-D FORWARD -i fr-a -m comment --comment fireroute:5ca1ab1e:a -j DROP"
    ]
    last = diff({k: r for k, r in current.items() if r.owner != "0dd1d0e5:o"}, {},
                Scope({"a", "ab"}), ID)  # fmt: skip
    assert len(last) == 3  # (a, ab and the shared rule)
    assert len(diff(current, {}, Scope({"a", "ab"}), ID)) == 2  # another file's rule: it stays


@pytest.mark.parametrize("bad", ['x" ; flush ruleset ; "', "a b"])
def test_names_cannot_reach_the_nft_script(bad):
    from fireroute.errors import UsageError
    from fireroute.model import check_vm_name

    with pytest.raises(UsageError):
        check_vm_name(bad)


def _allow(v: Vm, *cidrs: str) -> Vm:
    o = Options(egress="none", allow_out=tuple(IPv4Network(c) for c in cidrs), table="fr")
    new = Vm(v.name, v.net, v.tap, v.mac, v.uplink, o)
    new.owner = v.owner
    return new


def _written(old: Vm, new: Vm) -> str:
    """The nft script changing ``old``'s egress policy to ``new``'s (change.py: the diff of
    the two, as one transaction)."""
    from fireroute import change

    steps = change.plan_change(old, new, change.POLICY)
    assert [s.tool for s in steps] == ["nft"] * len(steps)
    return as_commands(Plan(steps))


def test_policy_change_writes_only_the_elements_that_change():
    """An interval set's delete costs the kernel a walk over the set, so a policy change
    deletes only what the new policy drops and adds only what it adds (bench/ports.py)."""
    old = _allow(vm("a", 1), "198.51.100.0/24", "203.0.113.0/24")
    more = _allow(old, "198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24")
    k = nft.shard(old.tap)
    text = _written(old, more)
    assert text.count("nft -f -") == 1  # one transaction
    writes = [line for line in text.splitlines() if " element " in line]
    assert writes == [
        f'add element ip fr out_allow_{k} {{ "fr-a" . 192.0.2.0/24 comment "5ca1ab1e:a" }}'
    ]
    back = _written(more, old)
    assert back.count("nft -f -") == 1
    writes = [line for line in back.splitlines() if " element " in line]
    gone = f'element ip fr out_allow_{k} {{ "fr-a" . 192.0.2.0/24 comment "5ca1ab1e:a" }}'
    assert writes == [f"add {gone}", f"delete {gone}"]  # added first: the delete never fails
    same = _allow(old, "203.0.113.0/24", "198.51.100.0/24")
    assert _written(old, same) == ""
    # positive control: dropping the policy removes the verdict map entry and both sets' entries
    plain = vm("a", 1, table="fr")
    none = _written(old, plain)
    assert f'delete element ip fr out_jump {{ "fr-a" comment "5ca1ab1e:a" : jump out_{k} }}' in (
        none
    )
    assert f"delete element ip fr out_allow_{k} " in none


def test_numbered_taps_spread_over_every_pair_of_policy_sets():
    """4000 numbered names (fr-p0 ...) land about evenly in the pairs of policy sets: a
    pair's size is what deleting from it costs the kernel."""
    from collections import Counter

    for pattern in ("fr-p{}", "fr-vm-{}", "tap{}"):
        sizes = Counter(nft.shard(pattern.format(i)) for i in range(4000))
        assert len(sizes) == nft.SHARDS
        assert max(sizes.values()) <= 1.25 * 4000 / nft.SHARDS, (pattern, sizes)


def _modes() -> list[Vm]:
    """One VM of each link shape: NAT (owned, a 127.0.0.1 port), bridge with a made bridge,
    bridge by DHCP on it, clone with an explicit clone address, CNI from the pool and from
    IPAM (with an MTU)."""
    from fireroute.model import Published

    nat = vm("n", 0, owner=Owner(1000, 1001), publish=(Published.parse("127.0.0.1:2222:22"),))
    made = vm(
        "b", 1, mode="bridge", bridge="br9", bridge_address="10.9.0.1/24", guest="10.9.0.5/24"
    )
    dhcp = vm("d", 2, mode="bridge", bridge="br9", dhcp=True)
    cl = vm("c", 3, mode="clone", clone_address="10.200.0.7")
    cl.netns_name = "fireroute-5ca1ab1e-c"
    cni = dict(netns="/run/netns/pod", container="c1", network="net")
    pool = vm("p", 4, mode="cni", ifname="eth0", **cni)
    ipam = vm("i", 5, mode="cni", ifname="eth1", guest="10.22.0.9/24", gateway="10.22.0.1",
              mtu=1400, **cni)  # fmt: skip
    return [nat, made, dhcp, cl, pool, ipam]
