"""A VM's iptables rules as typed objects (want/iptables.py): one ordered block per VM,
keyed by the saved ``-A`` spelling whichever way a rule goes in, printed as ``-A``/``-I``/``-D``."""

from __future__ import annotations

from ipaddress import IPv4Network

from fireroute.model import Options, Vm
from fireroute.repair import order
from fireroute.want import iptables as want
from tests.unit.test_iptables_order import judged

ID = "5ca1ab1e"
C = f"-m comment --comment fireroute:{ID}:a"


def nat(**kw) -> Vm:
    v = Vm("a", IPv4Network("172.16.0.0/30"), "fr-a", "06:00:AC:10:00:02", "eth0", Options(**kw))
    v.owner = ID
    return v


def test_a_block_is_in_the_order_its_rules_must_stand_in():
    got = [(r.table, r.saved) for r in want.block(nat(backend="iptables"))]
    forward = [s for t, s in got if s.startswith("-A FORWARD")]
    assert forward == [
        f"-A FORWARD -d 169.254.169.254/32 -i fr-a {C} -j DROP",
        f"-A FORWARD -i fr-a {want.UNTRACKABLE} {C} -j DROP",
        f"-A FORWARD -s 172.16.0.2/32 -i fr-a -o eth0 {want.TRACKED} {C} -j ACCEPT",
        f"-A FORWARD -i fr-a {C} -j DROP",
        f"-A FORWARD -o fr-a {C} -j DROP",
    ]
    # the source, before conntrack: no forged packet rides a neighbour's established flow
    assert got[0] == ("raw", f"-A PREROUTING ! -s 172.16.0.2/32 -i fr-a {C} -j DROP")
    assert got[1] == ("nat", f"-A POSTROUTING -s 172.16.0.2/32 -o eth0 {C} -j MASQUERADE")
    assert got[-1] == ("filter", f"-A INPUT -i fr-a {C} -j DROP")  # the catch-all last
    assert {(r.owner, r.vm) for r in want.block(nat())} == {(f"{ID}:a", "a")}


def test_a_clone_and_a_bridge_guest_have_no_raw_rule():
    """A clone's namespace masquerades everything it sends (one source); a bridge guest's
    source is checked at its bridge port. A NAT guest's is checked in raw (above)."""
    clone = nat(backend="iptables", mode="clone", guest="10.0.0.2/30")
    assert [r.table for r in want.block(clone)].count("raw") == 0
    assert [r.table for r in want.block(nat(backend="iptables"))].count("raw") == 1


def test_allowed_metadata_and_host_ports_change_the_block():
    specs = [r.spec for r in want.block(nat(allow_metadata=True, allow_host_ports=[(22, "tcp")]))]
    assert not any("169.254.169.254" in s for s in specs)
    at = specs.index(f"-i fr-a -p tcp -m tcp --dport 22 {C} -j ACCEPT")
    assert specs[at + 1] == f"-i fr-a {C} -j DROP"  # before the INPUT catch-all


def test_an_inserted_rule_prints_i_and_is_keyed_as_saved():
    first, second = want.policy_fix(nat(fix_forward_policy=True))
    assert first.insert and first.text("create") == f"-I FORWARD -i fr-a {C} -j ACCEPT"
    assert first.key == ("filter", f"-A FORWARD -i fr-a {C} -j ACCEPT")
    assert first.text("delete") == f"-D FORWARD -i fr-a {C} -j ACCEPT"
    assert first.at(3) == f"-I FORWARD 3 -i fr-a {C} -j ACCEPT"
    assert "RELATED,ESTABLISHED" in second.spec and second.spec.startswith("-o fr-a ")
    assert want.policy_fix(nat(backend="iptables")) == []  # its block is in FORWARD already


def test_rules_are_the_block_and_the_fix_asked_for():
    assert want.rules(nat()) == []  # nft backend, no fix
    assert want.rules(nat(fix_forward_policy=True)) == want.policy_fix(nat())
    assert want.rules(nat(backend="iptables")) == want.block(nat(backend="iptables"))
    assert {r.saved for r in want.rules(nat(fix_forward_policy=True))} == {
        r.saved for r in want.policy_fix(nat())
    }


def test_the_shared_rule_is_tagged_shared_and_appended():
    r = want.conntrack()
    assert r.owner == "fireroute:shared" and r.vm is None and not r.insert
    assert r.text("create") == want.conntrack().saved == r.saved


def test_plans_render_the_objects():
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import ALL, diff
    from fireroute.want import render

    v = nat(backend="iptables")
    steps = [s for s in compile(diff({}, render.desired([v], None, ID), ALL, ID)) if s.table]
    rules = [want.conntrack(), *want.block(v)]
    assert [s.text for s in steps] == [r.text("create") for r in rules]
    assert [s.undo[0].text for s in steps] == [r.text("delete") for r in rules]
    assert [s.table for s in steps] == [r.table for r in rules]
    for (table, chain), rs in order.rule_blocks(v).items():
        assert rs == [r for r in want.block(v) if (r.table, r.chain) == (table, chain)]


def test_restore_writes_a_disordered_block_again_where_it_stood():
    v = nat(backend="iptables")
    saved = [(r.table, r.saved) for r in want.block(v)]
    forward = [line for _t, line in saved if line.startswith("-A FORWARD")]
    others = [(t, line) for t, line in saved if not line.startswith("-A FORWARD")]

    def state(fwd: list[str]) -> tuple[dict, dict]:
        rules = [("filter", line) for line in fwd] + others
        chains: dict = {("filter", "FORWARD"): [want.conntrack().saved, "-A FORWARD -j foreign"]}
        for t, line in rules:
            chains.setdefault((t, order.chain_of(line)), []).append(line)
        return chains, order.index(rules)

    chains, tagged = state([forward[1], forward[0], *forward[2:]])  # two rules swapped
    assert judged(chains, [v])  # the damage is seen
    steps = order.heal(chains, tagged, [v], [])
    assert [s.text for s in steps if not s.text.startswith("-D")] == [
        r.at(3 + i) for i, r in enumerate(x for x in want.block(v) if x.chain == "FORWARD")
    ]
    chains, tagged = state(forward)  # (the positive control: in order, nothing to do)
    assert judged(chains, [v]) == [] and order.heal(chains, tagged, [v], []) == []
