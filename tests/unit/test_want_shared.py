"""The shared objects are decided from the shape of the leases alone (want/shared.py): each
decision (a table's first and last VM, a bridge in use, a masquerading bridge's egress, the
iptables conntrack rule, forwarding) beside its opposite, with no kernel and no root."""

from __future__ import annotations

from ipaddress import IPv4Network

from fireroute.model import Options, Vm
from fireroute.state.store import Store
from fireroute.want.shared import BRIDGE, NAT, Population, Shared, shared

ID = "5ca1ab1e"
T = Options().table  # the default table name


def nat(name: str, ordinal: int, **kw) -> Vm:
    v = Vm(name, IPv4Network(f"172.16.0.{4 * ordinal}/30"), f"fr-{name}", "", "eth0", Options(**kw))
    v.owner = ID
    return v


def guest(name: str, last_byte: int | None, **kw) -> Vm:
    """A bridge guest on br0: with an address (``last_byte``), or DHCP (None)."""
    if last_byte is None:
        o = Options(mode="bridge", bridge="br0", dhcp=True, **kw)
        net = None
    else:
        o = Options(mode="bridge", bridge="br0", guest=f"10.9.0.{last_byte}/24", **kw)
        net = IPv4Network(f"10.9.0.{last_byte}/32")
    v = Vm(name, net, f"fb-{name}", "", "eth0", o)
    v.owner = ID
    return v


def want(*vms: Vm) -> Shared:
    return shared(Population.of(vms), ID)


def test_nothing_up_wants_nothing():
    assert Population().empty() and Population.of([]).empty()
    assert want() == Shared(frozenset(), frozenset(), frozenset(), False, False)


def test_a_table_is_wanted_from_its_first_vm_to_its_last():
    a, b = nat("a", 0, table="t1"), nat("b", 1, table="t1")
    assert (NAT, "t1") not in want().tables  # a's up: the first VM makes the table
    assert (NAT, "t1") in want(a).tables  # b's up: not the first, the table is there
    # a going down while b stays: not the last; then b going down: the last
    assert (NAT, "t1") in shared(Population.of([a, b]), ID).tables
    rows = [("nat", "nft", "t1", None, None, None, "eth0", 2)]
    assert (NAT, "t1") in shared(Population(rows, minus=[a]), ID).tables
    assert (NAT, "t1") not in shared(Population(rows, minus=[a, b]), ID).tables


def test_two_tables_are_decided_apart():
    a, b = nat("a", 0, table="t1"), nat("b", 1, table="t2")
    both = want(a, b)
    assert both.tables_of(NAT) == ["t1", "t2"]
    assert want(b).tables_of(NAT) == ["t2"]  # a gone: t1 has had its last VM, t2 not
    assert want(a).tables_of(NAT) == ["t1"]
    assert both.tables_of(BRIDGE) == []


def test_iptables_vms_want_no_nft_table_but_the_conntrack_rule():
    ipt, tables = nat("a", 0, backend="iptables"), nat("b", 1)
    assert want(ipt).tables == frozenset() and want(ipt).conntrack
    assert not want(tables).conntrack and want(tables).tables == {(NAT, T)}
    assert want(ipt, tables).conntrack  # the last iptables VM, not the last VM, drops it
    assert not want(tables).conntrack


def test_a_dhcp_guest_is_on_its_bridge_but_in_no_nat_table_and_needs_no_conntrack_rule():
    dhcp, known = guest("d", None, backend="iptables"), guest("k", 5, backend="iptables")
    assert want(dhcp).bridges == {"br0"} and want(dhcp).tables == {(BRIDGE, T)}
    assert not want(dhcp).conntrack
    assert want(known).conntrack  # the addressed guest is a NAT member (host protection)


def test_a_bridge_is_in_use_while_a_guest_is_on_it():
    a, b = guest("a", 5), guest("b", 6)
    assert want(a, b).bridges == {"br0"}
    assert want(b).bridges == {"br0"}  # a leaves: b still on it
    assert want().bridges == frozenset()  # b leaves too: the last, the bridge may go
    assert want(nat("n", 0)).bridges == frozenset()  # a NAT VM is on no bridge
    assert (BRIDGE, T) in want(a).tables  # and its filter table, from the first guest
    assert (BRIDGE, T) not in want(nat("n", 0)).tables


def test_a_masquerading_bridge_wants_its_egress_element_and_a_plain_one_does_not():
    masq, plain = guest("m", 5, masquerade=True), guest("p", 6)
    assert want(masq).egress_of(T) == {("br0", "eth0", ID)}
    assert want(plain).egress_of(T) == set()
    assert want(masq, plain).egress_of(T) == {("br0", "eth0", ID)}
    assert want(masq).egress_of("other") == set()  # another table has none
    # one element per (bridge, uplink), however many guests masquerade through it
    assert len(want(masq, guest("m2", 7, masquerade=True)).egress) == 1
    # on the iptables backend the masquerade is an iptables rule: no element in an nft table
    assert want(guest("i", 8, masquerade=True, backend="iptables")).egress == frozenset()


def test_forwarding_is_wanted_while_any_vm_is_up():
    assert want(nat("a", 0)).forwarding and want(guest("d", None)).forwarding
    assert not want().forwarding
    rows = [("nat", "nft", T, None, None, None, "eth0", 1)]
    assert shared(Population(rows), ID).forwarding
    assert not shared(Population(rows, minus=[nat("a", 0)]), ID).forwarding


def test_the_state_files_rows_and_its_vms_have_one_shape(tmp_path):
    """Store.shapes() rows and the VMs they were written from count as the same shape, so
    taking every VM away leaves nothing (the down of the last VM sees it is the last)."""
    vms = [
        nat("a", 0),
        nat("b", 1, backend="iptables", table="t2"),
        guest("c", 5, masquerade=True),
        guest("d", None),
    ]
    store = Store(tmp_path / "state.db")
    store.reserve(vms)
    rows = store.shapes()
    assert Population(rows).counts == Population.of(vms).counts
    assert shared(Population(rows), ID) == want(*vms)
    assert Population(rows, minus=vms).empty()
    assert not Population(rows, minus=vms[:3]).empty()


def test_a_population_less_the_going_vms_is_the_one_without_them(tmp_path):
    """``less`` (down counts the going VMs once, for what stays and what goes) is the
    population made with ``minus`` of the same VMs."""
    vms = [nat("a", 0), nat("b", 1, table="t2"), guest("c", 5, masquerade=True), guest("d", None)]
    store = Store(tmp_path / "state.db")
    store.reserve(vms)
    rows = store.shapes()
    for going in (vms[:1], vms[1:3], vms):
        less = Population(rows).less(Population.of(going))
        assert less.counts == Population(rows, minus=going).counts
        assert shared(less, ID) == shared(Population(rows, minus=going), ID)
    assert Population(rows).less(Population.of(vms)).empty()
