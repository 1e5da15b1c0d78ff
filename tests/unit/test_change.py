"""``policy`` and ``publish`` as one diff (change.py), run on the fake kernel without root: a
running VM's elements rendered with its old options against those of the new, kept to the
sets those options fill, applied all or nothing to the fake as the executor would run them."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from fireroute import allocate, change, manager
from fireroute.errors import ConflictError, NotFound
from fireroute.kernel import forwarding, observe
from fireroute.kernel.fake import Fake
from fireroute.model import Published
from fireroute.plan.steps import as_commands
from fireroute.want import render
from fireroute.want.nft import shard
from fireroute.want.tables import JUMP_RULE
from tests.unit.test_down import Host, of, up
from tests.unit.test_plan import vm
from tests.unit.test_up_decisions import Apply

T = (None, "ip", "firecracker")


def key(kind: str, *rest: str) -> tuple:
    return (kind, (*T, *rest))


def element(set_name: str, value: str) -> tuple:
    return key("nft element", set_name, value)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A state file, the fake host, and a manager changing it all or nothing."""
    fake = Fake()
    monkeypatch.setattr(observe, "require_net_admin", lambda action: None)
    monkeypatch.setattr(forwarding, "recorded", lambda: None)
    monkeypatch.setattr(change, "which", lambda tool: f"/usr/sbin/{tool}")  # (conntrack)
    monkeypatch.setattr(allocate, "which", lambda tool: None)  # (no kernel maps to look in)
    m = manager.Manager(tmp_path / "state.db", runner=Host(fake))
    m.executor = lambda: Apply(fake)  # type: ignore[assignment,return-value]
    return m, fake


def allow(*cidrs: str) -> dict:
    """An egress policy as request fields (what ``policy`` takes)."""
    return dict(egress="none", allow_out=list(cidrs))


def allowed(*cidrs: str) -> dict:
    """The same as options (what a VM was brought up with)."""
    return dict(egress="none", allow_out=[IPv4Network(c) for c in cidrs])


def test_a_policy_change_adds_and_removes_only_the_changed_elements(host):
    m, fake = host
    up(m, fake, vm("a", 0, **allowed("198.51.100.0/24", "203.0.113.0/24")), vm("b", 1))
    k = shard("fr-a")
    before = dict(fake.objs)
    m.policy("a", {"allow_out": ["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"]})
    added = element(f"out_allow_{k}", '"fr-a" . 192.0.2.0/24')
    assert set(fake.objs) - set(before) == {added}
    assert {k: o for k, o in fake.objs.items() if k != added} == before  # nothing else
    assert "192.0.2.0/24" in [str(n) for n in m.show("a").options.allow_out]
    m.policy("a", {"allow_out": ["203.0.113.0/24"]})
    gone = element(f"out_allow_{k}", '"fr-a" . 198.51.100.0/24')
    assert set(before) - set(fake.objs) == {gone} and added not in fake.objs
    assert {k: o for k, o in fake.objs.items() if k in before} == {
        k: o for k, o in before.items() if k != gone
    }
    # the egress turned from none to public: its deny elements replaced, the allow kept
    m.policy("a", {"egress": "internet", "deny_out": ["10.0.0.0/8"]})
    assert element(f"out_deny_{k}", '"fr-a" . 10.0.0.0/8') in fake.objs
    assert element(f"out_deny_{k}", '"fr-a" . 0.0.0.0/0') not in fake.objs
    _as_up_makes_them(m, fake)


def test_the_same_policy_again_changes_nothing(host):
    m, fake = host
    up(m, fake, vm("a", 0, **allowed("198.51.100.0/24")))
    before = dict(fake.objs)
    assert not change.plan_change(m.show("a"), m.show("a"), change.POLICY)
    m.policy("a", {"egress": "none"})  # (what it has: a no-op)
    assert fake.objs == before


def test_a_first_policy_declares_the_parts_of_the_table_it_needs(host):
    """A lean table (want/tables.py PARTS) gets the policy sets, chains and the forward rule
    on @out_jump with the first VM that has a policy; a second VM's first policy declares
    the parts already there again (idempotent), and dropping the policy leaves them."""
    m, fake = host
    up(m, fake, vm("a", 0), vm("b", 1))
    ka, kb = shard("fr-a"), shard("fr-b")
    jump, forward = key("nft set", "out_jump"), key("nft chain", "forward")
    assert jump not in fake.objs and JUMP_RULE not in fake.objs[forward].rules
    m.policy("a", allow("198.51.100.0/24"))
    for part in (f"out_deny_{ka}", f"out_allow_{ka}"):
        assert key("nft set", part) in fake.objs
    for chain in (f"out_{ka}", "out_reject"):
        assert key("nft chain", chain) in fake.objs
    assert jump in fake.objs and JUMP_RULE in fake.objs[forward].rules
    assert element("out_jump", f'"fr-a" : jump out_{ka}') in fake.objs
    m.policy("b", allow("192.0.2.0/24"))  # out_jump is there: declared, not created again
    assert element("out_jump", f'"fr-b" : jump out_{kb}') in fake.objs
    assert element(f"out_allow_{kb}", '"fr-b" . 192.0.2.0/24') in fake.objs
    m.policy("a", {"egress": "internet", "allow_out": []})
    assert not [k for k in of(fake, "a") if k[0] == "nft element" and "out_" in k[1][3]]
    assert jump in fake.objs and JUMP_RULE in fake.objs[forward].rules  # a part stays
    _as_up_makes_them(m, fake)


def test_a_policy_dry_run_changes_nothing(host):
    m, fake = host
    up(m, fake, vm("a", 0))
    before, recorded = dict(fake.objs), m.show("a").options.identity()
    new = m.policy("a", allow("192.0.2.0/24"), dry_run=True)
    assert [str(n) for n in new.options.allow_out] == ["192.0.2.0/24"]
    assert fake.objs == before and m.show("a").options.identity() == recorded
    m.policy("a", allow("192.0.2.0/24"))  # (the control: the same change, done)
    assert fake.objs != before and m.show("a").options.identity() != recorded


def test_publish_and_unpublish(host):
    m, fake = host
    up(m, fake, vm("a", 0), vm("b", 1))
    pub = key("nft set", "pub_any")
    assert pub not in fake.objs  # (a lean table)
    before = dict(fake.objs)
    vm_a, plan = m.publish("a", ["8080:80", "127.0.0.1:2222:22"], [])
    text = as_commands(plan)
    assert text.count("nft -f -") == 1 and "sysctl -w net/ipv4/conf/fr-a/route_localnet=1" in text
    assert text.index("nft -f -") < text.index("route_localnet")  # after the map change
    assert pub in fake.objs and key("nft chain", "pub_pre") in fake.objs  # the part, first use
    any_port = element("pub_any", '"tcp" . 8080 : 172.16.0.2 . 80')
    on_lo = element("pub_addr", '127.0.0.1 . "tcp" . 2222 : 172.16.0.2 . 22')
    assert any_port in fake.objs and on_lo in fake.objs
    assert ("sysctl", (None, "net/ipv4/conf/fr-a/route_localnet")) in fake.objs
    assert of(fake, "b") == {k: o for k, o in before.items() if o.vm == "b"}
    assert [str(p) for p in m.show("a").options.publish] == [str(p) for p in vm_a.options.publish]
    _as_up_makes_them(m, fake)
    _, plan = m.publish("a", [], ["8080:80"])
    assert any_port not in fake.objs and on_lo in fake.objs
    assert "delete element ip firecracker pub_any" in as_commands(plan)
    assert [str(p) for p in m.show("a").options.publish] == ["127.0.0.1:2222:22/tcp"]


def test_udp_flows_are_forgotten_on_publish_and_unpublish(host):
    m, fake = host
    up(m, fake, vm("a", 0))
    _, plan = m.publish("a", ["5353:53/udp", "8080:80"], [])
    flush = "conntrack -D -p udp --orig-port-dst 5353"
    text = as_commands(plan)
    assert text.count(flush) == 1 and text.index("nft -f -") < text.index(flush)
    assert "8080" not in text.partition("conntrack")[2]  # tcp: nothing to forget
    _, plan = m.publish("a", [], ["5353:53/udp"])
    assert as_commands(plan).count(flush) == 1
    assert element("pub_any", '"udp" . 5353 : 172.16.0.2 . 53') not in fake.objs


def test_a_port_another_vm_holds_is_refused(host):
    m, fake = host
    up(m, fake, vm("a", 0, publish=[Published.parse("8080:80")]), vm("b", 1))
    before = dict(fake.objs)
    for spec in ("8080:81", "8080:80"):
        with pytest.raises(ConflictError, match='published by vm "a"'):
            m.publish("b", [spec], [])
    assert fake.objs == before and m.show("b").options.publish == ()
    m.publish("b", ["8081:80"], [])  # the positive control: a free port
    assert element("pub_any", '"tcp" . 8081 : 172.16.0.6 . 80') in fake.objs


def test_unpublishing_what_is_not_published_is_refused(host):
    m, fake = host
    up(m, fake, vm("a", 0, publish=[Published.parse("8080:80")]))
    before = dict(fake.objs)
    with pytest.raises(NotFound, match="does not publish"):
        m.publish("a", [], ["9090:80"])
    assert fake.objs == before
    m.publish("a", [], ["8080:80"])  # (the control)
    assert fake.objs != before


def test_a_publish_dry_run_changes_nothing(host):
    m, fake = host
    up(m, fake, vm("a", 0))
    before, recorded = dict(fake.objs), m.show("a").options.identity()
    _, plan = m.publish("a", ["8080:80"], [], dry_run=True)
    assert "add element ip firecracker pub_any" in as_commands(plan)
    assert fake.objs == before and m.show("a").options.identity() == recorded
    m.publish("a", ["8080:80"], [])  # (the control: the same change, done)
    assert fake.objs != before and m.show("a").options.publish


def test_in_every_mode_only_the_elements_and_parts_change(host):
    """A clone's policy, a CNI attachment's and a NAT VM's ports: their links, namespaces and
    the clone's own table are left as they are; only the shared NAT table changes."""
    from fireroute.want.netns import Netns
    from tests.unit.test_plan import _modes

    m, fake = host
    fake.seed(Netns("/run/netns/pod", "", None))  # (the runtime's namespace)
    up(m, fake, *_modes()[:5])  # (less the second attachment: one is enough)
    before = dict(fake.objs)
    m.policy("c", allow("192.0.2.0/24"))
    m.publish("p", ["8080:80"], [])
    m.publish("n", [], ["127.0.0.1:2222:22"])
    diff = {k for k in {*fake.objs, *before} if fake.objs.get(k) != before.get(k)}
    assert {k[0] for k in diff} == {"nft element", "nft set", "nft chain"}
    assert {k[1][:3] for k in diff} == {T}
    assert element(f"out_allow_{shard('fr-c')}", '"fr-c" . 192.0.2.0/24') in diff
    assert element("pub_addr", '127.0.0.1 . "tcp" . 2222 : 172.16.0.2 . 22') in diff
    _as_up_makes_them(m, fake)


@pytest.mark.parametrize(
    ("what", "had", "has"),
    [
        (change.POLICY, allowed("198.51.100.0/24", "10.99.0.0/24"), allowed("10.0.0.0/8")),
        (
            change.PORTS,
            dict(publish=[Published.parse("8080:80"), Published.parse("5353:53/udp")]),
            dict(publish=[Published.parse("8080:81"), Published.parse("127.0.0.1:22:22")]),
        ),
    ],
)
def test_a_change_undone_leaves_the_host_as_it_was(host, what, had, has):
    """When a step after the nft transaction fails (a conntrack flush, route_localnet), the
    executor runs the undo of what ran, newest first: the elements that came go, those that
    went come back."""
    from fireroute.model import Options
    from fireroute.plan.steps import groups

    m, fake = host
    up(m, fake, vm("a", 0, **had), vm("b", 1))
    before = dict(fake.objs)
    old = m.show("a")
    steps = change.plan_change(old, change.changed(old, Options(**has)), what)
    undo = []
    for group in groups(steps):
        assert set(fake.apply([op for s in group for op in getattr(s, "ops", ())])) <= {"ok"}
        undo += [u for s in group for u in s.undo]
    assert fake.objs != before  # (the control: it changed)
    for group in groups(list(reversed(undo))):
        assert set(fake.apply([op for s in group for op in s.ops], force=True)) == {"ok"}
    assert {k: o for k, o in fake.objs.items() if o.kind != "sysctl"} == {
        k: o for k, o in before.items() if o.kind != "sysctl"
    }


def test_a_vm_that_is_not_up_is_refused(host):
    m, fake = host
    up(m, fake, vm("a", 0))
    m._store().set_state(["a"], "pending")
    with pytest.raises(ConflictError, match="is not up"):
        m.policy("a", {"egress": "none"})
    with pytest.raises(ConflictError, match="is not up"):
        m.publish("a", ["8080:80"], [])


def _as_up_makes_them(m: manager.Manager, fake: Fake) -> None:
    """What the changes left is what an up of the VMs as recorded now wants (every object
    of theirs there, none of their elements more): the changes did what up would have."""
    store = m.state()
    wanted = render.desired(store.all(), None, store.instance())
    assert [k for k in wanted if k[0] != "forwarding" and k not in fake.objs] == []
    extra = [k for k, o in fake.objs.items() if o.kind == "nft element" and k not in wanted]
    assert extra == []
