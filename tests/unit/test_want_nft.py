"""A VM's nftables elements as typed objects (want/nft.py): keyed by (table, set, value),
tagged with their owner in the comment, and written as the lines ``nft`` takes."""

from __future__ import annotations

from ipaddress import IPv4Network

from fireroute.model import Options, Vm
from fireroute.want import nft as want
from fireroute.want.nft import NftElement, by_set, element_lines

ID = "5ca1ab1e"


def nat(name: str = "a", ordinal: int = 0, **kw) -> Vm:
    net = IPv4Network(f"172.16.0.{4 * ordinal}/30")
    v = Vm(name, net, f"fr-{name}", "06:00:AC:10:00:02", "eth0", Options(**kw))
    v.owner = ID
    return v


def guest(name: str = "g", **kw) -> Vm:
    o = Options(mode="bridge", bridge="br0", guest="10.9.0.5/24", **kw)
    v = Vm(name, IPv4Network("10.9.0.5/32"), f"fr-{name}", "06:00:AC:10:00:0A", "eth0", o)
    v.owner = ID
    return v


def test_a_nat_vm_s_elements_are_keyed_and_tagged_for_it():
    v = nat()
    got = want.elements(v)
    assert {e.key for e in got} == {
        (None, "ip", v.table, "masq", '172.16.0.2 . "eth0"'),
        (None, "ip", v.table, "egress", '"fr-a" . "eth0"'),
        (None, "ip", v.table, "taps", '"fr-a"'),
        (None, "ip", v.table, "vms", '"fr-a" . 172.16.0.2'),
        (None, "ip", v.table, "acct_tx", '"fr-a"'),
        (None, "ip", v.table, "acct_rx", '"fr-a"'),
    }
    assert {(e.owner, e.vm) for e in got} == {(f"{ID}:a", "a")}
    assert got[2].text("add") == f'add element ip {v.table} taps {{ "fr-a" comment "{ID}:a" }}\n'


def test_a_map_element_carries_its_comment_after_the_key():
    v = nat(publish=[(None, 8080, 80, "tcp")])
    (e,) = [e for e in want.elements(v) if e.set == "pub_any"]
    assert e.value == '"tcp" . 8080 : 172.16.0.2 . 80'
    assert e.tagged() == f'"tcp" . 8080 comment "{ID}:a" : 172.16.0.2 . 80'


def test_a_policy_lands_in_the_tap_s_shard():
    v = nat(egress="none")
    k = want.shard("fr-a")
    assert 0 <= k < want.SHARDS and want.shard("fr-a") == k  # by name: it never moves
    sets = by_set(want.elements(v))
    assert sets["out_jump"] == [f'"fr-a" : jump out_{k}']
    assert sets[f"out_deny_{k}"] == ['"fr-a" . 0.0.0.0/0']
    assert not any(s.startswith("out_") for s in by_set(want.elements(nat())))  # no policy


def test_a_masquerading_guest_needs_its_bridge_s_egress_element_tagged_for_the_bridge():
    v = guest(masquerade=True)
    shared = [e for e in want.nat_elements(v) if e.vm is None]
    assert [(e.set, e.value, e.owner) for e in shared] == [
        ("egress", '"br0" . "eth0"', f"{ID}:bridge:br0")
    ]
    assert shared[0] == want.egress_element(v.table, "br0", "eth0", ID)
    assert shared[0] not in want.elements(v)  # not the guest's own
    # without masquerade, and for a DHCP guest, nothing shared; a DHCP guest has no element
    assert all(e.vm == "g" for e in want.nat_elements(guest()))
    o = Options(mode="bridge", bridge="br0", dhcp=True)
    dhcp = Vm("d", None, "fr-d", "06:00:AC:10:00:0B", "eth0", o)
    dhcp.owner = ID
    assert want.nat_elements(dhcp) == [] and want.filter_elements(dhcp) != []


def test_filter_elements_key_the_tap_and_its_addresses_in_the_bridge_family():
    got = want.filter_elements(guest())
    assert [(e.family, e.set, e.value) for e in got] == [
        ("bridge", "ports", '"fr-g"'),
        ("bridge", "macs", '"fr-g" . 06:00:ac:10:00:0a'),
        ("bridge", "ipports", '"fr-g"'),
        ("bridge", "addrs", '"fr-g" . 10.9.0.5'),
    ]


def test_element_lines_group_by_set_in_the_table_s_order_whatever_the_vm_order():
    a, b = nat("a", 0, allow_peers=True), nat("b", 1)
    elems = want.elements(b) + want.elements(a)
    text = element_lines("add", "ip", "t", elems, want.RANK)
    sets = [line.split()[4] for line in text.splitlines()]
    assert sets == [s for s in (*want.SETS, *want.MAPS) if s in sets]
    assert text.count("add element ip t taps ") == 1  # one line per set, both VMs on it
    assert '"fr-b" comment "5ca1ab1e:b", "fr-a" comment "5ca1ab1e:a"' in text


def test_equal_keys_are_one_element_whoever_tags_it():
    x = NftElement("ip", "t", "taps", '"fr-a"', "x:a", "a")
    y = NftElement("ip", "t", "taps", '"fr-a"', "y:a", "a")
    assert x == y and hash(x) == hash(y)
    assert x != NftElement("ip", "t", "taps", '"fr-b"', "x:a", "a")


def test_the_plan_s_dict_view_is_the_objects():
    v = nat(allow_metadata=True, allow_host_ports=[(22, "tcp")])
    assert by_set(want.elements(v))["host_ports"] == ['"fr-a" . "tcp" . 22']
