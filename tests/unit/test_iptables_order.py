"""repair/order.py: the order of the iptables backend's rules. ``heal``'s steps, applied the
way iptables applies them (``-D`` the first matching rule, ``-I`` at a 1-based position that
may be one past the end, ``-A`` at the end), leave every VM's block whole and in order, the
shared rule above them, and the foreign rules in their order; the kernel tests
(tests/kernel/test_iptables_order.py) do the same with real packets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute.kernel.read import Current, rule_of
from fireroute.model import Vm
from fireroute.plan.steps import Step
from fireroute.repair import order
from fireroute.repair.picture import Picture
from fireroute.want import iptables
from tests.unit.test_plan import ID, vm

VMS = [vm("a", 0, allow_host_ports=[(22, "tcp")]), vm("b", 1, allow_metadata=True), vm("c", 2)]
SHARED = iptables.conntrack().saved
FOREIGN = [f"-A FORWARD -s 10.9.{i}.0/24 -j ACCEPT" for i in range(3)] + [
    "-A INPUT -p tcp -m tcp --dport 2222 -j DROP"
]


def rendered() -> dict[tuple[str, str], list[str]]:
    """The chains as ``up`` writes them: the shared rule, then each VM's rules appended."""
    chains: dict[tuple[str, str], list[str]] = {}
    for table, rule in [
        ("filter", SHARED),
        *((r.table, r.saved) for v in VMS for r in iptables.block(v)),
    ]:
        chains.setdefault((table, order.chain_of(rule)), []).append(rule)
    return chains


def apply(chains: dict[tuple[str, str], list[str]], steps: list[Step]) -> None:
    """The steps as iptables-nft-restore runs them (an error where it would refuse)."""
    for s in steps:
        op, name, rest = s.text.split(" ", 2)
        chain = chains.setdefault((s.table, name), [])
        if op == "-D":
            chain.remove(f"-A {name} {rest}")  # the first match; ValueError: none
        elif op == "-I":
            at, rule = rest.split(" ", 1)
            assert 1 <= int(at) <= len(chain) + 1, s.text
            chain.insert(int(at) - 1, f"-A {name} {rule}")
        else:
            assert op == "-A", s.text
            chain.append(s.text)


def saved(chains: dict[tuple[str, str], list[str]]) -> list[tuple[str, str]]:
    return [(t, line) for (t, _), lines in chains.items() for line in lines]


def blocks(v: Vm) -> dict[tuple[str, str], list[str]]:
    """A VM's block as saved lines, by (table, chain)."""
    return {key: [r.saved for r in rules] for key, rules in order.rule_blocks(v).items()}


def judged(chains: dict[tuple[str, str], list[str]], vms: list[Vm]) -> list[str]:
    """What check says of the order of the rules in ``chains`` when ``vms`` are leased: the
    diff's judgement (a block or the shared rule out of order), and the rules of a VM there
    twice (the read's index holds each once: the picture finds them)."""
    cur = Current()
    for t, x in saved(chains):
        r = rule_of(t, x)
        cur.ipt.append(r)
        if r.owner:
            cur.add(r)
    rules = [iptables.conntrack(), *(r for v in vms for r in iptables.block(v))]
    pic = Picture(cur, {(r.kind, r.key): r for r in rules}, ID, vms)
    found = [op.note for op in pic.diff() if op.note]
    return found + [
        f'iptables rules of vm "{r.vm}" in {r.chain} are out of order: "{r.saved}" is there twice'
        for r in pic.twice()
    ]


def problems(chains: dict[tuple[str, str], list[str]]) -> list[str]:
    return judged(chains, VMS)


def healed(chains: dict[tuple[str, str], list[str]]) -> list[Step]:
    rules = [(t, x) for t, x in saved(chains) if iptables.comment_tag(x)]
    steps = order.heal(chains, order.index(rules), VMS, [])
    apply(chains, steps)
    want = rendered()
    for key, lines in chains.items():
        ours = [x for x in lines if iptables.comment_tag(x)]
        assert sorted(ours) == sorted(want.get(key, [])), key  # each rule once
        for v in VMS:
            mine = [x for x in lines if iptables.comment_tag(x) == iptables.tag(v)]
            assert mine == blocks(v).get(key, []), (v.name, key)
    assert problems(chains) == []
    return steps


def test_a_clean_chain_needs_nothing():
    chains = rendered()
    assert problems(chains) == [] and healed(chains) == []


def test_a_deleted_metadata_drop_goes_back_before_the_accept_where_the_block_stood():
    chains = rendered()
    forward = chains[("filter", "FORWARD")]
    forward.insert(0, FOREIGN[0])
    forward.append(FOREIGN[1])
    drop = blocks(VMS[0])[("filter", "FORWARD")][0]
    assert "169.254.169.254" in drop
    forward.remove(drop)
    assert problems(chains) == []  # a missing rule is reported by drift, not as disorder
    steps = healed(chains)
    assert all(s.vm == "a" for s in steps) and steps[-1].text.startswith("-I FORWARD ")
    assert forward.index(drop) == 2  # below the foreign rule and the shared one, as before
    assert forward[-1] == FOREIGN[1]


def test_a_rule_reappended_by_hand_is_out_of_order():
    chains = rendered()
    forward = chains[("filter", "FORWARD")]
    drop = blocks(VMS[2])[("filter", "FORWARD")][0]
    forward.remove(drop)
    forward.append(drop)
    (found,) = problems(chains)
    assert found.startswith('iptables rules of vm "c" in FORWARD are out of order: "')
    assert f'"{drop}" comes after "' in found
    healed(chains)


def test_the_shared_rule_goes_back_above_the_first_vm_rule():
    chains = rendered()
    forward = chains[("filter", "FORWARD")]
    forward.insert(0, FOREIGN[0])
    forward.remove(SHARED)
    forward.append(SHARED)
    (found,) = problems(chains)
    assert found.startswith(f'shared iptables rule is out of order: "{SHARED}" comes after "')
    steps = healed(chains)
    assert [s.text.split(" ", 2)[:2] for s in steps] == [["-D", "FORWARD"], ["-I", "FORWARD"]]
    assert forward[:2] == [FOREIGN[0], SHARED]  # the foreign rule stays above


def test_a_rule_there_twice_is_out_of_order():
    chains = rendered()
    inputs = chains[("filter", "INPUT")]
    inputs.append(blocks(VMS[0])[("filter", "INPUT")][0])
    (found,) = problems(chains)
    assert found.startswith('iptables rules of vm "a" in INPUT are out of order')
    healed(chains)


def test_after_a_reboot_everything_is_appended_in_order():
    chains: dict[tuple[str, str], list[str]] = {("filter", "FORWARD"): list(FOREIGN[:1])}
    steps = healed(chains)
    assert all(s.text.startswith("-A ") for s in steps)
    assert chains[("filter", "FORWARD")][:2] == [FOREIGN[0], SHARED]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_damage_is_healed(data: st.DataObject):
    """Rules of ours deleted, moved or doubled anywhere, foreign rules anywhere: one heal puts
    every block whole and in order and moves no foreign rule past another."""
    chains = rendered()
    for key, lines in list(chains.items()):
        ours = data.draw(st.permutations(lines))
        ours = [x for x in ours if data.draw(st.booleans()) or data.draw(st.booleans())]
        doubled = [x for x in lines if x != SHARED]  # (the shared rule twice is no harm)
        ours += data.draw(st.lists(st.sampled_from(doubled), max_size=2)) if doubled else []
        foreign = [x for x in FOREIGN if order.chain_of(x) == key[1]]
        for f in foreign:
            ours.insert(data.draw(st.integers(0, len(ours))), f)
        chains[key] = ours
    before = {k: [x for x in v if x in FOREIGN] for k, v in chains.items()}
    healed(chains)
    assert {k: [x for x in v if x in FOREIGN] for k, v in chains.items()} == before
    assert healed(chains) == []  # a second heal: nothing to do
