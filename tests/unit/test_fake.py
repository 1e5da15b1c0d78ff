"""The fake host (kernel/fake.py): every semantic beside the same path succeeding. Whether the
kernel agrees is tests/kernel/test_fake_parity.py's question."""

from ipaddress import IPv4Network

import pytest

from fireroute.kernel import fake, kinds
from fireroute.kernel.apply import InjectedFault
from fireroute.kernel.fake import SKIPPED, UNDONE, Fake, FakeSet
from fireroute.kernel.kinds import BUSY, EXISTS, MISSING, OK, OTHER
from fireroute.model import Options, Vm
from fireroute.plan.ops import group_delete_step, regroup_step
from fireroute.want import bridge, clone, tap
from fireroute.want.iptables import IptRule
from fireroute.want.netns import Netns, Route, TcRedirect
from fireroute.want.nft import NftElement
from fireroute.want.objects import DOOMED_GROUP, Link, Sysctl
from fireroute.want.tables import NftChain, NftTable


class Op:
    def __init__(self, verb, obj):
        self.verb, self.obj = verb, obj


def vm(name: str, ordinal: int, owner: str = "5ca1ab1e", **kw) -> Vm:
    net = IPv4Network(f"172.16.0.{4 * ordinal}/30")
    v = Vm(
        name, net, f"fr-{name}", "06:00:AC:10:00:%02X" % (4 * ordinal + 2), "eth0", Options(**kw)
    )
    v.owner = owner
    if v.mode == "clone":
        v.netns_name = f"fireroute-{owner}-{name}"
    return v


def one(f: Fake, verb: str, obj) -> str:
    (out,) = f.apply([Op(verb, obj)])
    return out


def up(f: Fake, objs) -> None:
    """Make objects as plan/ops orders them: a link's add, then its set line."""
    for o in objs:
        if o.kind == "link":
            if o.made:
                assert one(f, "create", o) == OK, o
            assert one(f, "set", o) == OK, o
        else:
            assert one(f, "create", o) == OK, o


def kinds_of(f: Fake) -> list[str]:
    return [k[0] for k in f.read()]


def nat():
    return tap.tap(vm("a", 0))


def table(name="t", ns=None):
    return NftTable("ip", name, "make table", "5ca1ab1e", None, ns)


def element(value='"fr-a"', set_name="taps", owner="5ca1ab1e:a", who="a"):
    return NftElement("ip", "t", set_name, value, owner, who)


# -- create ----------------------------------------------------------------------------------


def test_an_address_needs_its_link():
    link, addr, _ = nat()
    f = Fake()
    assert one(f, "create", addr) == MISSING and not f.read()
    assert one(f, "create", link) == OK and one(f, "create", addr) == OK  # control
    assert list(f.read()) == [fake.ident(link), fake.ident(addr)]


@pytest.mark.parametrize("which", [0, 1])
def test_creating_what_is_there_is_exists(which):
    objs = nat()
    f = Fake()
    up(f, objs[: which + 1])
    before = f.dump()
    assert one(f, "create", objs[which]) == EXISTS and f.dump() == before


def test_a_namespace_and_a_table_made_twice_exist():
    f = Fake()
    ns = Netns("fireroute-x-c", "x:c", "c")
    assert one(f, "create", ns) == OK and one(f, "create", ns) == EXISTS
    assert one(f, "create", table()) == OK and one(f, "create", table()) == EXISTS
    assert one(f, "set", table()) == OK  # declared (``add table``): no clash


def test_a_namespace_is_made_with_its_loopback_down():
    f = Fake()
    up(f, [Netns("n1", "x:c", "c")])
    lo = f.objs[("link", ("n1", "lo"))]
    assert lo.link_kind == "loopback" and not lo.up


def test_anything_in_a_missing_namespace_is_missing():
    c = vm("c", 3, mode="clone")
    objs = clone.clone(c)
    tun = next(o for o in objs if o.kind == "link" and o.link_kind == "tun")
    f = Fake()
    assert one(f, "create", tun) == MISSING
    assert one(f, "create", clone.table(c)) == MISSING
    assert one(f, "create", clone.host_veth(c)) == MISSING  # its far end would go there
    assert not f.read()
    up(f, [clone.netns(c)])  # control
    assert one(f, "create", tun) == OK and one(f, "create", clone.table(c)) == OK
    assert one(f, "create", clone.host_veth(c)) == OK


def test_a_veth_whose_far_name_is_taken_exists():
    c = vm("c", 3, mode="clone")
    f = Fake()
    up(f, [clone.netns(c)])
    taken = Link("veth0", "tun", "", None, "", ns=c.netns, uid=0)
    assert one(f, "create", taken) == OK
    assert one(f, "create", clone.host_veth(c)) == EXISTS
    assert one(f, "delete", taken) == OK and one(f, "create", clone.host_veth(c)) == OK


def test_a_port_needs_its_bridge():
    b = vm("b", 1, mode="bridge", bridge="br9", dhcp=True)
    (port,) = tap.tap(b)
    f = Fake()
    assert one(f, "set", port) == MISSING  # no link at all
    assert one(f, "create", port) == OK  # ``tuntap add`` names no bridge
    made = f.get(port)
    assert (made.master, made.up, made.alias, made.uid) == (None, False, "", 0)  # as made
    assert one(f, "set", port) == MISSING and f.get(port).master is None
    up(f, bridge.bridge(b))  # control
    assert one(f, "set", port) == OK and f.get(port).master == "br9"
    assert f.get(port) == port  # what ``link set`` does not touch stays


def test_loopback_up_has_its_address():
    f = Fake()
    up(f, [Netns("n1", "x:c", "c")])
    assert [k[0] for k in f.read()] == ["netns", "link"]
    lo = Link("lo", "loopback", "x:c", "c", "", ns="n1", group=None, made=False)
    assert one(f, "set", lo) == OK
    assert ("addr", ("n1", "lo", "127.0.0.1/8")) in f.objs


def test_a_master_that_is_no_bridge_is_refused():
    b = vm("b", 1, mode="bridge", bridge="fr-a", dhcp=True)
    f = Fake()
    up(f, nat()[:1])
    plain = Link("fr-b", "tun", "", None, "", uid=0)
    up(f, [plain])
    assert one(f, "set", tap.link(b)) == OTHER


def test_an_element_needs_its_set_and_table():
    f = Fake()
    assert one(f, "create", element()) == MISSING
    up(f, [table()])
    assert one(f, "create", element()) == MISSING
    up(f, [FakeSet(None, "ip", "t", "taps", "ifname")])  # control
    assert one(f, "create", element()) == OK


def test_adding_an_element_that_is_there_changes_nothing():
    f = Fake()
    up(f, [table(), FakeSet(None, "ip", "t", "taps", "ifname"), element()])
    other = element(owner="5ca1ab1e:b", who="b")  # same value, another comment
    assert one(f, "create", other) == OK and one(f, "set", other) == OK
    (kept,) = [o for o in f.read().values() if o.kind == "nft element"]
    assert kept.owner == "5ca1ab1e:a"  # the element as first added


def test_a_sysctl_needs_its_device_and_is_written_again():
    link, _, v6 = nat()
    f = Fake()
    assert one(f, "create", v6) == MISSING
    up(f, [link])
    assert one(f, "create", v6) == OK and one(f, "create", v6) == OK  # no "exists" for a write
    zero = Sysctl(v6.path, "0", "", "", None)
    assert one(f, "set", zero) == OK and f.get(v6).value == "0"


def test_a_route_needs_its_gateway_on_an_up_link():
    c = vm("c", 3, mode="clone")
    objs = clone.clone(c)
    route = next(o for o in objs if o.kind == "route")
    before = [o for o in objs[: objs.index(route)] if not (o.kind == "link" and o.name == "veth0")]
    f = Fake()
    up(f, before)  # veth0 addressed, still down
    far = next(o for o in objs if o.kind == "link" and o.name == "veth0")
    assert one(f, "create", route) == MISSING
    assert one(f, "set", far) == OK and one(f, "create", route) == OK  # control
    assert one(f, "create", route) == EXISTS


def test_a_route_on_a_device_needs_it_up():
    link, addr, _ = nat()
    f = Fake()
    down = Link(link.name, "tun", "", None, "", uid=0, up=False)
    up(f, [down, addr])
    r = Route("10.9.0.0/24", None, link.name, "route", "", None)
    assert one(f, "create", r) == MISSING
    assert one(f, "set", link) == OK and one(f, "create", r) == OK


def test_a_tc_redirect_needs_both_links():
    a, b = Link("a0", "tun", "", None, "", uid=0), Link("b0", "tun", "", None, "", uid=0)
    tc = TcRedirect("a0", "b0", "", None, None)
    f = Fake()
    up(f, [a])
    assert one(f, "create", tc) == MISSING
    up(f, [b])
    assert one(f, "create", tc) == OK and one(f, "create", tc) == EXISTS


# -- delete ----------------------------------------------------------------------------------


@pytest.mark.parametrize("i", [0, 1])
def test_deleting_what_is_not_there_is_missing(i):
    obj = nat()[i]
    f = Fake()
    assert one(f, "delete", obj) == MISSING
    up(f, nat()[: i + 1])
    assert one(f, "delete", obj) == OK  # control


def test_a_deleted_link_takes_its_addresses_routes_sysctls_and_redirects():
    link, addr, v6 = nat()
    f = Fake()
    other = Link("fr-z", "tun", "", None, "", uid=0)
    up(f, [link, addr, v6, other])
    route = Route("10.9.0.0/24", "172.16.0.2", None, "via the guest", "", None)
    on_dev = Route("10.8.0.0/24", None, "fr-a", "on the tap", "", None)
    tc = TcRedirect("fr-a", "fr-z", "", None, None)
    back = TcRedirect("fr-z", "fr-a", "", None, None)
    up(f, [route, on_dev, tc, back])
    assert one(f, "delete", link) == OK
    assert [o for o in f.read().values()] == [other, back]  # (a redirect to it stays)


def test_a_veth_takes_its_far_end_and_a_namespace_everything_in_it():
    c = vm("c", 3, mode="clone", clone_address="10.200.0.7")
    objs = clone.clone(c)
    f = Fake()
    keep = Link("fr-z", "tun", "", None, "", uid=0)
    up(f, [keep, *objs])
    assert ("link", (c.netns, "veth0")) in f.objs and ("route", (None, "10.200.0.7/32")) in f.objs
    g = Fake()
    up(g, [keep, *objs])
    assert one(g, "delete", clone.host_veth(c)) == OK
    assert ("link", (c.netns, "veth0")) not in g.objs  # the far end went
    assert ("route", (c.netns, "default")) not in g.objs  # its gateway was through it
    assert ("route", (None, "10.200.0.7/32")) not in g.objs
    assert ("link", (c.netns, "vmtap0")) in g.objs  # control: the rest of the namespace stays
    assert one(f, "delete", clone.netns(c)) == OK
    assert list(f.read().values()) == [keep]  # the root end went with its far end


def test_a_table_takes_its_sets_chains_and_elements():
    f = Fake()
    other = table("u")
    chain = NftChain(table(), "forward", "type filter hook forward priority 0;", ("drop",))
    up(f, [table(), other, FakeSet(None, "ip", "t", "taps", "ifname"), chain, element()])
    assert one(f, "delete", table()) == OK
    assert list(f.read().values()) == [other]
    assert one(f, "delete", table()) == MISSING and one(f, "create", element()) == MISSING


def test_a_deleted_bridge_lets_its_ports_go():
    b = vm("b", 1, mode="bridge", bridge="br9", dhcp=True)
    f = Fake()
    up(f, [*bridge.bridge(b), *tap.tap(b)])
    assert f.get(tap.link(b)).master == "br9"
    assert one(f, "delete", bridge.link(b)) == OK
    assert f.get(tap.link(b)).master is None


def test_a_set_a_rule_uses_and_a_chain_jumped_to_are_busy():
    f = Fake()
    s, free = FakeSet(None, "ip", "t", "taps", "ifname"), FakeSet(None, "ip", "t", "x", "ifname")
    head = "type filter hook forward priority 0;"
    target = NftChain(table(), "out_a", "", ("accept",))
    user = NftChain(table(), "forward", head, ("iifname @taps drop", "jump out_a"))
    up(f, [table(), s, free, target, user])
    assert one(f, "delete", s) == BUSY and one(f, "delete", target) == BUSY
    assert one(f, "delete", free) == OK  # control: a set no rule names goes
    assert one(f, "delete", user) == OK
    assert one(f, "delete", s) == OK and one(f, "delete", target) == OK


def test_a_held_tap_is_deleted_and_its_vmm_loses_it():
    """``ip link del`` of a tap a VMM has open succeeds (checked against the kernel); a
    second tap of that name is refused while it is there."""
    f = Fake()
    up(f, nat())
    f.hold("fr-a")
    assert one(f, "create", nat()[0]) == EXISTS
    assert one(f, "delete", nat()[0]) == OK and not f.held


def test_a_regroup_changes_the_group_only():
    """``link set dev X group G`` (plan/ops.py ``regroup_step``): the tap keeps its alias,
    its owner, its address and stays up; a link not there is missing."""
    link, addr, v6 = nat()
    f = Fake()
    (moved,) = regroup_step(link, DOOMED_GROUP, "mark").ops
    assert one(f, "set", moved.obj) == MISSING
    up(f, [link, addr, v6])
    before = f.get(link)
    assert one(f, "set", moved.obj) == OK
    after = f.get(link)
    assert after.group == DOOMED_GROUP != before.group
    assert fake.LINK_FIELDS and all(
        getattr(after, k) == getattr(before, k) for k in fake.LINK_FIELDS if k != "group"
    )
    assert f.get(addr) is addr and f.get(v6) is v6


def test_a_link_seeded_in_a_namespace_not_held_can_be_set():
    """A CNI runtime's namespace is not the fake's object, its links are (as read): setting
    one works; making one there is missing (the control)."""
    ns = "/var/run/netns/cni-x"
    seen = Link("tap0", "tun", "", None, "", ns=ns, uid=0, group=None, up=False)
    f = Fake()
    f.seed(seen)
    brought_up = Link("tap0", "tun", "", None, "", ns=ns, uid=0, group=None)
    assert one(f, "set", brought_up) == OK and f.get(seen).up
    assert one(f, "create", Link("tap1", "tun", "", None, "", ns=ns, uid=0)) == MISSING


def regrouped(f: Fake, *links: Link) -> None:
    for link in links:
        (act,) = regroup_step(link, DOOMED_GROUP, "mark").ops
        assert one(f, "set", act.obj) == OK


def test_a_group_delete_takes_the_groups_links_with_what_goes_with_them():
    """``link del group G``: every link of the group in that namespace, each with its
    addresses and sysctls; a veth's far end goes too. The controls: a link of another group,
    and a link of the same group in another namespace, stay."""
    link, addr, v6 = nat()
    b = tap.tap(vm("b", 1))
    c = vm("c", 3, mode="clone", clone_address="10.200.0.7")
    objs = clone.clone(c)
    other = Link("fr-z", "tun", "", None, "", uid=0)
    f = Fake()
    up(f, [link, addr, v6, *b, other, *objs])
    inside = next(o for o in objs if o.kind == "link" and o.ns and o.link_kind == "tun")
    regrouped(f, link, b[0], clone.host_veth(c), inside)
    (act,) = group_delete_step(DOOMED_GROUP, "delete").ops
    assert act.obj.ns is None and one(f, "delete", act.obj) == OK
    left = f.read()
    assert not [o for o in [link, addr, v6, *b] if fake.ident(o) in left]
    assert ("link", (None, c.tap)) not in left and ("link", (c.netns, "veth0")) not in left
    assert fake.ident(other) in left  # control: another group's link stays
    assert ("link", (c.netns, inside.name)) in left  # control: the namespace's own group
    (there,) = group_delete_step(DOOMED_GROUP, "delete", "c", c.netns).ops
    assert one(f, "delete", there.obj) == OK and ("link", (c.netns, inside.name)) not in f.read()


def test_a_group_delete_of_an_empty_group_is_missing():
    """As the kernel (ENODEV, ``RTNETLINK answers: No such device``); the control: the same
    delete once a link is in the group."""
    link = nat()[0]
    f = Fake()
    up(f, [link])
    (act,) = group_delete_step(DOOMED_GROUP, "delete").ops
    assert one(f, "delete", act.obj) == MISSING and fake.ident(link) in f.read()
    regrouped(f, link)
    assert one(f, "delete", act.obj) == OK and not f.read()
    assert one(f, "delete", act.obj) == MISSING


def test_a_group_holding_a_loopback_or_the_default_group_is_refused_whole():
    """A loopback cannot be deleted: the kernel refuses the whole group (EOPNOTSUPP) and
    deletes nothing of it; group 0 is refused (EPERM). Control: without the loopback the
    same group goes."""
    link = nat()[0]
    lo = Link("lo", "loopback", "", None, "", group=None, up=False, made=False)
    f = Fake()
    f.seed(lo)
    up(f, [link])
    regrouped(f, link, lo)
    (act,) = group_delete_step(DOOMED_GROUP, "delete").ops
    assert one(f, "delete", act.obj) == OTHER and fake.ident(link) in f.read()
    (zero,) = group_delete_step(0, "delete").ops
    assert one(f, "delete", zero.obj) == kinds.DENIED
    f.seed(lo)  # (back in no group)
    assert one(f, "delete", act.obj) == OK and list(f.read().values()) == [lo]


def test_replace_is_delete_then_create():
    link = nat()[0]
    f = Fake()
    assert one(f, "replace", link) == MISSING
    owned = Link("fr-a", "tun", link.owner, "a", link.alias, uid=7)
    up(f, [owned, nat()[1]])
    assert one(f, "replace", link) == OK
    assert f.get(link).uid == 0 and len(f.read()) == 1  # its address went with the old one


# -- groups ----------------------------------------------------------------------------------


def test_an_ip_group_stops_at_its_first_failure_unless_forced():
    link, addr, _ = nat()
    b = Link("fr-b", "tun", "", None, "", uid=0)
    f = Fake()
    up(f, [b])
    assert f.apply([Op("create", link), Op("create", b), Op("create", addr)]) == [
        OK,
        EXISTS,
        SKIPPED,
    ]
    assert fake.ident(link) in f.objs and fake.ident(addr) not in f.objs  # the first stays
    g = Fake()
    up(g, [b])
    out = g.apply([Op("create", link), Op("create", b), Op("create", addr)], force=True)
    assert out == [OK, EXISTS, OK] and fake.ident(addr) in g.objs


def test_an_nft_group_is_all_or_nothing():
    f = Fake()
    up(f, [table(), FakeSet(None, "ip", "t", "taps", "ifname")])
    before = dict(f.objs)
    lost = NftElement("ip", "t", "nope", '"fr-a"', "5ca1ab1e:a", "a")
    assert f.apply([Op("create", element()), Op("create", lost)]) == [UNDONE, MISSING]
    assert f.objs == before
    assert f.apply([Op("create", element())]) == [OK] and len(f.objs) == len(before) + 1


def test_an_iptables_group_is_all_or_nothing():
    good = IptRule("filter", "FORWARD", "-i fr-a -j DROP", "5ca1ab1e:a", "a")
    bad = IptRule("filter", "NOPE", "-i fr-a -j DROP", "5ca1ab1e:a", "a")
    f = Fake()
    assert f.apply([Op("create", good), Op("create", bad)]) == [UNDONE, MISSING]
    assert not f.objs
    assert f.apply([Op("create", good)]) == [OK] and f.objs


def test_sysctls_are_written_one_by_one():
    link, _, v6 = nat()
    lost = Sysctl("net/ipv6/conf/fr-q/disable_ipv6", "1", "", "", None)
    f = Fake()
    up(f, [link])
    assert f.apply([Op("set", lost), Op("set", v6)]) == [MISSING, OK] and f.get(v6)


def test_iptables_rules_append_twice_and_an_insert_goes_first():
    a = IptRule("filter", "FORWARD", "-i fr-a -j DROP", "x:a", "a")
    b = IptRule("filter", "FORWARD", "-o fr-a -j DROP", "x:a", "a")
    top = IptRule("filter", "FORWARD", "-i fr-a -j ACCEPT", "x:a", "a", insert=True)
    f = Fake()
    up(f, [a, b, a, top])
    assert [o.spec for o in f.read().values()] == [top.spec, a.spec, b.spec]
    assert f.dump().count("-A FORWARD -i fr-a -j DROP") == 2
    assert one(f, "delete", a) == OK and one(f, "delete", a) == OK  # one copy, then the rule
    assert one(f, "delete", a) == MISSING


def test_forwarding_is_a_value():
    class Forwarding:
        kind, key, ns, vm, owner = "forwarding", (None,), None, None, ""
        value = "1"

    f = Fake()
    assert f.forwarding == "0" and one(f, "set", Forwarding()) == OK and f.forwarding == "1"
    assert one(f, "delete", Forwarding()) == OTHER and f.forwarding == "1"


# -- faults ----------------------------------------------------------------------------------


def test_fail_at_k_fails_after_the_kth_group_ran():
    link, addr, v6 = nat()
    f = Fake()
    f.fail_at(2)
    assert f.apply([Op("create", link)]) == [OK]
    with pytest.raises(InjectedFault):
        f.apply([Op("create", addr)])
    assert fake.ident(addr) in f.objs  # it ran, then the fault
    assert f.apply([Op("create", v6)]) == [OK]  # control: only the second group fails


def test_kill_at_k_stops_there():
    link, addr, _ = nat()
    f = Fake(fault="kill@1")
    with pytest.raises(fake.Killed):
        f.apply([Op("create", link)])
    assert list(f.objs) == [fake.ident(link)]
    g = Fake()  # control
    assert g.apply([Op("create", link)]) == [OK] and g.apply([Op("create", addr)]) == [OK]


# -- reading ---------------------------------------------------------------------------------


def test_read_all_or_the_named_vms_and_the_shared():
    f = Fake()
    a, b = tap.link(vm("a", 0)), tap.link(vm("b", 1))
    theirs = tap.link(vm("a", 2, owner="0ther1d0"))
    theirs.name = "fr-x"
    shared = Link("br9", "bridge", "5ca1ab1e:bridge:br9", None, "")
    up(f, [a, b, theirs, shared])
    assert list(f.read()) == [fake.ident(o) for o in (a, b, theirs, shared)]
    assert list(f.read(["a"], "5ca1ab1e")) == [fake.ident(a), fake.ident(shared)]
    assert list(f.read(["a"])) == [fake.ident(o) for o in (a, theirs, shared)]


def test_the_fake_needs_no_privilege():
    assert Fake().require_net_admin("create tap") is None


def test_dump_prints_the_lines_that_make_the_host():
    f = Fake()
    objs = nat()
    up(f, objs)
    f.seed(table(), FakeSet(None, "ip", "t", "taps", "ifname"), element())
    lines = f.dump().splitlines()
    link, addr, v6 = objs
    assert lines[:4] == [link.text("create"), link.text("set"), addr.text("create"), v6.text()]
    assert 'create table ip t { comment "fireroute"; }' in lines
    assert element().text("add").strip() in lines
    assert lines[-1] == "net.ipv4.ip_forward=0"


def test_probe_answers_from_the_seeded_routes():
    f = Fake()
    f.seed(Link("up0", "veth", "", None, "", peer=(None, "x"), made=False))
    f.seed_route("0.0.0.0/0", "up0")
    f.seed_route("172.16.0.4/30", "docker0")
    view = f.probe(
        None, [IPv4Network("172.16.0.0/30"), IPv4Network("172.16.0.4/30")], lambda d: False
    )
    assert view.uplink == "up0"
    assert list(view.conflicts) == [IPv4Network("172.16.0.4/30")]  # control: the first is free
    assert "docker0" in view.conflicts[IPv4Network("172.16.0.4/30")]
    up(f, nat()[:2])  # our own tap's routes are no conflict
    view = f.probe("up0", [IPv4Network("172.16.0.0/30")], lambda d: d == "fr-a")
    assert not view.conflicts
    view = f.probe("up0", [IPv4Network("172.16.0.0/30")], lambda d: False)
    assert list(view.conflicts) == [IPv4Network("172.16.0.0/30")]


# -- kinds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("RTNETLINK answers: File exists", EXISTS),
        ("ioctl(TUNSETIFF): Device or resource busy", EXISTS),
        ('Cannot find device "fr-a"', MISSING),
        ("Error: Nexthop has invalid gateway.", MISSING),
        ("Error: Could not process rule: No such file or directory", MISSING),
        ("RTNETLINK answers: Cannot assign requested address", MISSING),
        ("Error: Could not process rule: Device or resource busy", BUSY),
        ("RTNETLINK answers: Operation not permitted", kinds.DENIED),
        ("Error: syntax error, unexpected fwd", OTHER),
    ],
)
def test_classify(text, kind):
    assert kinds.classify(text) == kind


def test_of_errno():
    import errno

    assert kinds.of_errno(errno.EEXIST) == EXISTS and kinds.of_errno(errno.ENODEV) == MISSING
    assert kinds.of_errno(errno.EBUSY) == BUSY and kinds.of_errno(errno.EINVAL) == OTHER
