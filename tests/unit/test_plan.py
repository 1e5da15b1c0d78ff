"""Plans print as the commands a person would type; golden files hold them."""

import os
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from fireroute.model import Options, Owner, Vm
from fireroute.plan import host, iptables, modes, nft
from fireroute.plan.steps import Plan, as_commands

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


def test_nft_up_plan_golden():
    v = vm("web-1", 0)
    plan = Plan()
    plan.add(
        *modes.links_up([v], set()), host.set_forwarding("1", "0"), nft.vms_up("firecracker", [v])
    )
    golden("up-nft.txt", as_commands(plan))


def test_nft_up_plan_of_a_new_table_golden():
    """A table the up makes (created exclusively): only what its VM needs, none of the
    parts of plan/nft.py PARTS (issue 23 step 22); a table that may exist gets them all."""
    v = vm("web-1", 0)
    plan = Plan()
    plan.add(nft.vms_up("firecracker", [v], exclusive=True))
    golden("up-nft-new-table.txt", as_commands(plan))


def test_iptables_up_plan_golden():
    v = vm("web-2", 1, backend="iptables", owner=Owner(1000, 1000))
    plan = Plan()
    plan.add(*modes.links_up([v], set()), *iptables.vms_up([v], need_conntrack=True))
    golden("up-iptables.txt", as_commands(plan))


def test_down_plans_golden():
    a, b = vm("a", 0), vm("b", 1)
    plan = Plan()
    plan.add(*host.taps_down([a, b]), nft.vms_down("firecracker", [a, b], last=False))
    golden("down-nft-two.txt", as_commands(plan))


def test_nft_rules_are_constant_per_vm_count():
    one = nft.vms_up("t", [vm("a", 0)]).text
    many = nft.vms_up("t", [vm(f"v{i}", i) for i in range(50)]).text
    rules = [line for line in one.splitlines() if line.startswith("add rule")]
    assert rules == [line for line in many.splitlines() if line.startswith("add rule")]
    # per-VM data lives in one element line per set, whatever the count
    element_lines = [line for line in many.splitlines() if line.startswith("add element")]
    assert len(element_lines) == len({line.split()[4] for line in element_lines}) <= len(nft.SETS)


def test_every_up_step_that_creates_has_an_inverse():
    v = vm("a", 0)
    steps = host.tap_up(v)
    assert steps[0].undo and steps[0].undo[0].text == "link del dev fr-a"
    assert [u.text for u in nft.vms_up("t", [v]).undo] == ["add table ip t\ndelete table ip t\n"]
    for s in iptables.vms_up([v], need_conntrack=True):  # each rule's undo deletes that rule
        assert [u.text for u in s.undo] == ["-D" + s.text[2:]], s.text


def test_iptables_remove_only_tagged_lines():
    saved = [
        ("filter", "-A FORWARD -i docker0 -j ACCEPT"),
        ("filter", '-A FORWARD -i fr-a -m comment --comment "fireroute:a" -j DROP'),
        ("filter", '-A FORWARD -i fr-ab -m comment --comment "fireroute:ab" -j DROP'),
        ("filter", '-A FORWARD -m comment --comment "fireroute:shared" -j ACCEPT'),
        ("nat", '-A POSTROUTING -m comment --comment "other:a" -j MASQUERADE'),
    ]
    steps = iptables.rules_down(saved, {"a"}, last=False)
    assert [s.text for s in steps] == [
        '-D FORWARD -i fr-a -m comment --comment "fireroute:a" -j DROP'
    ]
    steps = iptables.rules_down(saved, {"a", "ab"}, last=True)
    assert len(steps) == 3


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


def test_mode_link_plans_golden():
    vms = _modes()
    up = Plan(modes.links_up(vms, {"br9"}))
    down = Plan(modes.links_down(vms, {"br9"}))
    golden("links-modes.txt", as_commands(up) + "# down\n" + as_commands(down))


def test_table_plans_golden():
    from fireroute.plan import bridge

    a, b = vm("a", 0), vm("b", 1, fix_forward_policy=True)
    br = vm("d", 2, mode="bridge", bridge="br9", guest="10.9.0.5/24", bridge_address="10.9.0.1/24")
    plan = Plan()
    plan.add(
        nft.vms_up("firecracker", [a, b], fresh=False),
        nft.vms_down("firecracker", [a, b], last=True),
        bridge.filter_up("firecracker", [br], fresh=True),
        *iptables.forward_policy_fix([b]),
    )
    golden("tables.txt", as_commands(plan))
