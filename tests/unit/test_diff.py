"""The one diff (plan/diff.py) and its words (plan/words.py): every kind missing, changed and
orphaned; what is another state file's left alone; what goes with a deleted object says
nothing of its own; a shared object kept while something else uses it."""

import copy

import pytest

from fireroute.model import Owner, Published
from fireroute.plan.diff import (
    ALL,
    CREATE,
    DELETE,
    DIFFERS,
    MISSING,
    ORPHAN,
    REPLACE,
    SET,
    STRAY,
    Op,
    Scope,
    diff,
    ours,
)
from fireroute.plan.words import Context, said, words
from fireroute.want import render
from fireroute.want.iptables import IptRule, conntrack
from fireroute.want.nft import NftElement
from fireroute.want.objects import Forwarding, Link, Obj, Sysctl
from fireroute.want.tables import NftChain, NftSet
from tests.unit.test_plan import _modes, vm

ID = "5ca1ab1e"
OTHER = "beefcafe"
NS = "/run/netns/pod"


def want(*vms, shape=None):
    return render.desired(list(vms), shape, ID)


def changed(index: dict, key: tuple, **attrs) -> dict:
    """``index`` with the object at ``key`` found otherwise."""
    out = dict(index)
    obj = copy.copy(index[key])
    for a, v in attrs.items():
        setattr(obj, a, v)
    out[key] = obj
    return out


def without(index: dict, *keys: tuple) -> dict:
    return {k: o for k, o in index.items() if k not in keys}


def plus(index: dict, *objs: Obj) -> dict:
    return {**index, **render.index(objs)}


def one(ops: list[Op]) -> Op:
    assert len(ops) == 1, ops
    return ops[0]


def said_all(ops: list[Op], **kw) -> list[str]:
    return [w for _, ws in said(ops, Context(**kw)) for w in ws]


def element(set_name: str, value: str, tag: str, table: str = "firecracker") -> NftElement:
    return NftElement("ip", table, set_name, value, tag, None)


def every_mode():
    """One VM of each mode (the CNI attachments with taps of their own) and an iptables VM."""
    vms = _modes()
    vms[5].options.tap = "tap1"
    return [*vms, vm("t", 6, backend="iptables")]


# -- nothing, everything ----------------------------------------------------------------------


def test_in_step_nothing_to_do():
    d = want(*every_mode())
    assert diff(d, d, ALL, ID) == []


def test_every_kind_missing_is_created_and_said_once():
    d = want(*every_mode())
    ops = diff({}, d, ALL, ID)
    assert [op.obj for op in ops] == list(d.values())
    assert {(op.verb, op.reason) for op in ops} == {(CREATE, MISSING)}
    kinds = {op.obj.kind for op in ops}
    assert kinds == {
        *("link", "addr", "route", "sysctl", "netns", "tc redirect", "forwarding"),
        *("nft table", "nft set", "nft chain", "nft element", "iptables rule"),
    }
    # each kind says it; what goes with a missing object is said by that object alone
    for op in ops:
        assert words(op), op
    lines = said_all(ops)
    assert 'tap "fr-n" is missing' in lines
    assert 'nftables table "firecracker" is missing' in lines
    assert not any("lacks" in line for line in lines)  # (the elements go with the table)
    assert "IPv4 forwarding is off" in lines


@pytest.mark.parametrize(
    "key, sentence",
    [
        (("link", (None, "fr-n")), 'tap "fr-n" is missing'),
        (("addr", (None, "fr-n", "172.16.0.1/30")), '"fr-n" lacks address 172.16.0.1/30'),
        (
            ("sysctl", (None, "net/ipv6/conf/fr-n/disable_ipv6")),
            'IPv6 is on for tap "fr-n" (guests could reach the host over it)',
        ),
        (
            ("sysctl", (None, "net/ipv6/conf/fr-p/disable_ipv6")),
            'IPv6 is on for veth "fr-p" (guests could reach the host over it)',
        ),
        (
            ("sysctl", (None, "net/ipv4/conf/fr-n/route_localnet")),
            'route_localnet is off on "fr-n" (its 127.0.0.1 ports cannot reach the guest)',
        ),
        (("link", (None, "br9")), 'bridge "br9" is missing'),
        (("netns", ("fireroute-5ca1ab1e-c",)), 'namespace "fireroute-5ca1ab1e-c" is missing'),
        (
            ("route", ("fireroute-5ca1ab1e-c", "default")),
            'namespace "fireroute-5ca1ab1e-c" has no default route via 172.16.0.13',
        ),
        (
            ("sysctl", ("fireroute-5ca1ab1e-c", "net.ipv4.ip_forward")),
            'IPv4 forwarding is off in namespace "fireroute-5ca1ab1e-c"',
        ),
        (
            ("route", (None, "10.200.0.7/32")),
            "host route 10.200.0.7 via 172.16.0.14 dev fr-c is missing",
        ),
        (("route", (None, "10.22.0.9/32")), "host route 10.22.0.9/32 dev fr-i is missing"),
        (("link", (NS, "tap0")), f'tap in "{NS}": "tap0" is missing'),
        (("tc redirect", (NS, "eth0")), f'"eth0" in "{NS}" does not redirect to "tap0"'),
        (
            ("nft element", (None, "ip", "firecracker", "masq", '172.16.0.2 . "eth0"')),
            'nft set firecracker/masq lacks 172.16.0.2 . "eth0"',
        ),
        (
            ("nft element", (None, "bridge", "firecracker", "ports", '"fr-b"')),
            'nft set bridge firecracker/ports lacks "fr-b"',
        ),
        (("nft set", (None, "ip", "firecracker", "taps")), "set taps of ip firecracker is missing"),
        (
            ("nft chain", (None, "ip", "firecracker", "forward")),
            "chain forward of ip firecracker is missing",
        ),
        (("forwarding", (None, "net.ipv4.ip_forward")), "IPv4 forwarding is off"),
        (
            ("iptables rule", ("filter", conntrack().saved)),
            f"shared iptables rule missing: {conntrack().saved}",
        ),
    ],
)
def test_one_missing_object_is_one_create_in_checks_words(key, sentence):
    d = want(*every_mode())
    op = one(diff(without(d, key), d, ALL, ID))
    assert (op.verb, op.reason, op.id) == (CREATE, MISSING, key)
    assert words(op, Context(d)) == [sentence]


# -- changed ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, attrs, verb, sentence",
    [
        (("link", (None, "fr-n")), {"up": False}, SET, 'tap "fr-n" is down'),
        (
            ("link", (None, "fr-b")),
            {"master": None},
            SET,
            'tap "fr-b" is not attached to bridge "br9"',
        ),
        (
            ("link", (None, "fr-n")),
            {"alias": "x"},
            SET,
            'tap "fr-n" does not carry owner tag fireroute:5ca1ab1e:n',
        ),
        (("link", (NS, "eth1")), {"mtu": 1500}, SET, f'"eth1" in "{NS}" has mtu 1500, not 1400'),
        (("link", (None, "fr-i")), {"mtu": 1500}, SET, 'veth "fr-i" has mtu 1500, not 1400'),
        (
            ("link", (NS, "tap1")),
            {"mac": "0a:02:0a:16:00:0a"},
            SET,
            f'tap in "{NS}": "tap1" has MAC 0a:02:0a:16:00:0a, not 0A:02:0A:16:00:09',
        ),
        (
            ("link", (None, "fr-n")),
            {"uid": 0, "gid": None},
            REPLACE,
            None,
        ),
        (
            ("link", (None, "fr-n")),
            {"link_kind": "dummy"},
            REPLACE,
            '"fr-n" is a dummy link, not a tun',
        ),
        (
            ("link", (None, "fr-c")),
            {"peer": ("elsewhere", "veth0")},
            REPLACE,
            'veth "fr-c" is not joined to "veth0"',
        ),
        (
            ("route", ("fireroute-5ca1ab1e-c", "default")),
            {"via": "10.0.0.1"},
            SET,
            'namespace "fireroute-5ca1ab1e-c" has no default route via 172.16.0.13',
        ),
        (
            ("sysctl", (None, "net/ipv6/conf/fr-n/disable_ipv6")),
            {"value": "0"},
            SET,
            'IPv6 is on for tap "fr-n" (guests could reach the host over it)',
        ),
        (("tc redirect", (NS, "eth0")), {"dst": "lo"}, SET, None),
        (
            ("nft chain", (None, "ip", "firecracker", "input")),
            {"rules": ("meta mark 0x0000002a counter",)},
            SET,
            None,
        ),
        (
            ("nft set", (None, "ip", "firecracker", "taps")),
            {"type": "ipv4_addr"},
            REPLACE,
            "set taps of ip firecracker is of type ipv4_addr, not ifname",
        ),
        (
            ("forwarding", (None, "net.ipv4.ip_forward")),
            {"value": "0"},
            SET,
            "IPv4 forwarding is off",
        ),
    ],
)
def test_one_changed_object_is_one_set_or_replace(key, attrs, verb, sentence):
    d = want(*every_mode())
    op = one(diff(changed(d, key, **attrs), d, ALL, ID))
    assert (op.verb, op.reason, op.id, op.obj) == (verb, DIFFERS, key, d[key])
    if sentence is not None:
        assert sentence in words(op, Context(d))
    else:
        assert words(op, Context(d))


def test_a_taps_owner_is_replaced_with_what_goes_with_it():
    """The owner of a tap cannot change: the tap is made again, and its address and sysctls
    with it (no ops of their own)."""
    d = want(vm("a", 0, owner=Owner(1000, 1001), publish=(Published.parse("127.0.0.1:22:22"),)))
    key = ("link", (None, "fr-a"))
    have = changed(d, key, uid=0, gid=None)
    op = one(diff(have, d, ALL, ID))
    assert op.verb == REPLACE and op.have is have[key]
    assert {o.kind for o in op.children} == {"addr", "sysctl"} and len(op.children) == 3
    users = {0: "root", 1000: "fc", 1001: "kvm"}
    found = words(op, Context(d, user=lambda uid, group: users.get(uid)))
    assert found == [
        'tap "fr-a" is owned by root, not fc (any local user could attach to an unowned tap)',
        'tap "fr-a" has group none, not kvm',
    ]
    # missing children of the replaced tap ride with it too
    op = one(diff(without(have, ("addr", (None, "fr-a", "172.16.0.1/30"))), d, ALL, ID))
    assert op.verb == REPLACE and len(op.children) == 3


def test_what_differs_under_a_replaced_link_is_said_with_it():
    """A veth where a tap should be is one replace (made again whole), and check says what
    else is wrong on it: route_localnet off for its 127.0.0.1 port."""
    d = want(vm("a", 0, publish=(Published.parse("127.0.0.1:22:22"),)))
    key = ("link", (None, "fr-a"))
    localnet = ("sysctl", (None, "net/ipv4/conf/fr-a/route_localnet"))
    have = without(changed(d, key, link_kind="veth"), localnet)
    op = one(diff(have, d, ALL, ID))
    assert op.verb == REPLACE and [o.id for o in op.inner] == [localnet]
    assert words(op) == [
        '"fr-a" is a veth link, not a tun',
        'route_localnet is off on "fr-a" (its 127.0.0.1 ports cannot reach the guest)',
    ]
    op = one(diff(changed(d, key, link_kind="veth"), d, ALL, ID))  # control: only the kind
    assert op.inner == () and words(op) == ['"fr-a" is a veth link, not a tun']


def test_a_chain_differing_says_what_it_lacks_and_holds():
    d = want(vm("a", 0))
    key = ("nft chain", (None, "ip", "firecracker", "acct_in"))
    extra = "meta mark 0x0000002a counter"
    op = one(diff(changed(d, key, rules=(extra,)), d, ALL, ID))
    assert words(op) == [
        f'chain acct_in of ip firecracker: lacks "iifname @acct_tx"; has foreign rule "{extra}"'
    ]


def test_an_adopted_bridge_is_never_set_nor_addressed():
    guest = vm("b", 1, mode="bridge", bridge="br9", bridge_address="10.9.0.1/24", dhcp=True)
    d = want(guest)
    theirs = Link("br9", "bridge", "", None, "", up=False, group=None)
    have = without(plus(d, theirs), ("addr", (None, "br9", "10.9.0.1/24")))
    assert diff(have, d, ALL, ID) == []
    # the positive control: our own bridge, found down and without its address
    mine = changed(have, ("link", (None, "br9")), up=False)
    mine[("link", (None, "br9"))].owner = f"{ID}:bridge:br9"
    mine[("link", (None, "br9"))].alias = f"fireroute:{ID}:bridge:br9"
    assert {(op.verb, op.obj.kind) for op in diff(mine, d, ALL, ID)} == {
        (SET, "link"),
        (CREATE, "addr"),
    }


# -- iptables blocks --------------------------------------------------------------------------


def test_a_block_with_a_rule_missing_is_written_again_whole():
    v = vm("t", 1, backend="iptables")
    d = want(v)
    block = [k for k, o in d.items() if isinstance(o, IptRule) and o.vm == "t"]
    ops = diff(without(d, block[2]), d, ALL, ID)
    assert [op.id for op in ops] == block  # every rule, in the block's order
    assert [op.verb for op in ops] == [REPLACE] * 2 + [CREATE] + [REPLACE] * (len(block) - 3)
    assert said_all(ops) == [f"iptables rule missing: {d[block[2]].saved}"]


def test_a_block_out_of_order_is_said_once_and_written_again():
    d = want(vm("t", 1, backend="iptables"))
    keys = list(d)
    forward = [k for k in keys if k[0] == "iptables rule" and "-A FORWARD" in k[1][1]]
    a, b = keys.index(forward[1]), keys.index(forward[2])
    keys[a], keys[b] = keys[b], keys[a]  # the kernel lists the third before the second
    ops = diff({k: d[k] for k in keys}, d, ALL, ID)
    assert {op.verb for op in ops} == {REPLACE}
    (line,) = said_all(ops)
    assert line.startswith('iptables rules of vm "t" in FORWARD are out of order: "')
    # the shared rule's place is not the block's: it is never rewritten with it
    assert all(op.obj.owner != "fireroute:shared" for op in ops)


def test_inserted_rules_stand_each_above_the_one_before():
    """The FORWARD-policy fix is inserted rule by rule: the kernel lists it reversed, and
    that is its order; listed as written, it is out of order."""
    d = want(vm("a", 0, fix_forward_policy=True))
    fix = [k for k in d if k[0] == "iptables rule"]
    assert len(fix) == 2
    rest = without(d, *fix)
    assert diff({**rest, fix[1]: d[fix[1]], fix[0]: d[fix[0]]}, d, ALL, ID) == []
    ops = diff({**rest, fix[0]: d[fix[0]], fix[1]: d[fix[1]]}, d, ALL, ID)
    assert [op.verb for op in ops] == [REPLACE, REPLACE]
    assert said_all(ops)[0].startswith('iptables rules of vm "a" in FORWARD are out of order')


# -- orphans and strays -----------------------------------------------------------------------


def orphan_of(kind: str) -> Obj:
    """An object of ``kind`` tagged for this state file that no lease asks for."""
    gone = render.vm(vm("x", 9, backend="iptables"))
    return next(o for o in gone if o.kind == kind)


@pytest.mark.parametrize(
    "kind, sentence",
    [
        ("link", 'link "fr-x" tagged for vm "x" has no lease'),
        ("iptables rule", "iptables rule has no lease: -A PREROUTING ! -s 172.16.0.38/32 -i fr-x"),
    ],
)
def test_an_orphan_of_this_state_file_is_deleted(kind, sentence):
    d = want(vm("a", 0))
    o = orphan_of(kind)
    op = one(diff(plus(d, o), d, ALL, ID))
    assert (op.verb, op.reason, op.obj) == (DELETE, ORPHAN, o)
    assert words(op)[0].startswith(sentence)


def test_orphans_of_every_kind():
    """A clone, a CNI attachment, a NAT VM's elements: each top object deleted, what goes
    with it says nothing."""
    vms = every_mode()
    d = want(*vms)
    gone = [v for v in vms if v.name in ("c", "i")]
    d_less = want(*[v for v in vms if v.name not in ("c", "i")], shape=None)
    ops = diff(d, d_less, ALL, ID)
    top = {(op.verb, op.obj.kind, op.obj.key) for op in ops}
    assert top == {
        (DELETE, "netns", ("fireroute-5ca1ab1e-c",)),  # the clone: inside, its veth, route
        (DELETE, "link", (NS, "eth1")),  # the attachment: its veth (the host end with it)
        (DELETE, "link", (NS, "tap1")),
        *(
            (DELETE, "nft element", e.key)
            for v in gone
            for e in render.vm(v)
            if isinstance(e, NftElement)
        ),
    }
    assert {op.reason for op in ops} == {ORPHAN}
    lines = said_all(ops, leased={v.name for v in vms if v not in gone})
    assert 'namespace "fireroute-5ca1ab1e-c" has no lease' in lines
    assert 'element "fr-c" of set ip firecracker taps has no lease' in lines


def test_another_state_files_element_is_left_alone():
    d = want(vm("a", 0))
    theirs = element("taps", '"fr-z"', f"{OTHER}:z")
    assert diff(plus(d, theirs), d, ALL, ID) == []
    assert not ours(theirs, ID)
    # the controls: the same element tagged for this state file, or with no tag, is ours
    mine = element("taps", '"fr-z"', f"{ID}:z")
    assert one(diff(plus(d, mine), d, ALL, ID)).reason == ORPHAN
    untagged = element("taps", '"fr-z"', "")
    op = one(diff(plus(d, untagged), d, ALL, ID))
    assert (op.verb, op.reason) == (DELETE, STRAY)
    assert words(op) == ['nft set firecracker/taps has "fr-z", which no lease asks for (no vm)']


def test_an_element_keyed_on_our_vm_is_ours_whatever_its_tag():
    """An allow of everything in a VM's policy set is that VM's, under another tag too; a
    policy element naming our guest's address as a destination is not."""
    d = want(vm("a", 0))
    keyed = element("out_allow_3", '"fr-a" . 0.0.0.0/0', f"{OTHER}:z")
    op = one(diff(plus(d, keyed), d, ALL, ID))
    assert (op.verb, op.reason, op.who) == (DELETE, STRAY, "a")
    assert words(op) == [
        'nft set firecracker/out_allow_3 has "fr-a" . 0.0.0.0/0, which no lease asks for'
    ]
    dest = element("out_deny_3", '"fr-z" . 172.16.0.2', f"{OTHER}:z")
    assert diff(plus(d, dest), d, ALL, ID) == []


def test_a_foreign_chain_and_set_in_our_table_are_deleted():
    d = want(vm("a", 0))
    table = d[("nft table", (None, "ip", "firecracker"))]
    chain = NftChain(table, "evil", "", ("accept",))
    evil = NftSet(table, "evil", "ifname")
    ops = diff(plus(d, chain, evil), d, ALL, ID)
    assert [(op.verb, op.reason) for op in ops] == [(DELETE, STRAY)] * 2
    assert said_all(ops) == [
        "chain evil of ip firecracker is not fireroute's",
        "set evil of ip firecracker is not fireroute's",
    ]


def test_an_untagged_element_in_a_table_we_do_not_use_is_not_ours():
    d = want(vm("a", 0))
    stray = element("taps", '"fr-z"', "", table="elsewhere")
    assert diff(plus(d, stray), d, ALL, ID) == []
    assert ours(element("taps", '"fr-z"', "fireroute:z"), ID) is False  # an id-less tag


# -- cascade ----------------------------------------------------------------------------------


def test_a_deleted_table_takes_its_sets_chains_and_elements():
    have = {k: o for k, o in want(vm("a", 0)).items() if k[0].startswith("nft")}
    assert {k[0] for k in have} == {"nft table", "nft set", "nft chain", "nft element"}
    op = one(diff(have, {}, ALL, ID))
    assert (op.verb, op.obj.kind) == (DELETE, "nft table")


def test_a_deleted_link_takes_its_addresses_and_sysctls():
    a = vm("a", 0, publish=(Published.parse("127.0.0.1:22:22"),))
    have = {k: o for k, o in want(a).items() if k[0] in ("link", "addr", "sysctl")}
    op = one(diff(have, {}, ALL, ID))
    assert op.id == ("link", (None, "fr-a"))


def test_a_deleted_namespace_takes_everything_in_it_and_the_veth_to_it():
    c = _modes()[3]
    have = {k: o for k, o in want(c).items() if o.vm == "c"}
    have = {k: o for k, o in have.items() if k[0] != "nft element"}
    assert {k[0] for k in have} >= {"netns", "link", "addr", "route", "sysctl", "nft table"}
    op = one(diff(have, {}, ALL, ID))
    assert op.id == ("netns", ("fireroute-5ca1ab1e-c",))


# -- shared objects ---------------------------------------------------------------------------


def test_first_vm_of_a_table_makes_it_second_adds_only_its_own():
    a, b = vm("a", 0), vm("b", 1)
    first = diff({}, want(a), ALL, ID)
    assert ("nft table", (None, "ip", "firecracker")) in {op.id for op in first}
    second = diff(want(a), want(a, b), ALL, ID)
    assert {op.verb for op in second} == {CREATE}
    assert {op.obj.vm for op in second} == {"b"}
    assert not any(op.obj.kind in ("nft table", "nft set", "nft chain") for op in second)


def test_last_vm_of_a_table_takes_it_others_only_their_own():
    a, b = vm("a", 0), vm("b", 1)
    down_b = diff(want(a, b), want(a), ALL, ID)
    assert {op.verb for op in down_b} == {DELETE} and {op.obj.vm for op in down_b} == {"b"}
    last = diff(want(a), {}, ALL, ID)
    assert {(op.verb, op.obj.kind) for op in last} == {(DELETE, "link"), (DELETE, "nft table")}


def test_a_table_is_kept_while_another_state_file_has_elements_in_it():
    a = vm("a", 0)
    theirs = element("taps", '"fr-z"', f"{OTHER}:z")
    ops = diff(plus(want(a), theirs), {}, ALL, ID)
    assert ("nft table", (None, "ip", "firecracker")) not in {op.id for op in ops}
    own = [op for op in ops if op.obj.kind == "nft element"]
    assert own and all(op.obj.vm == "a" for op in own)  # ours go one by one, theirs stays
    assert {op.obj.kind for op in ops} == {"link", "nft element"}  # its sets and chains stay


def test_a_bridge_is_kept_while_another_port_is_on_it():
    g = vm("b", 1, mode="bridge", bridge="br9", bridge_address="10.9.0.1/24", dhcp=True)
    have = {k: o for k, o in want(g).items() if k[0] in ("link", "addr")}
    port = Link("veth9", "veth", "", None, "", master="br9", peer=("x", "y"))
    ops = diff(plus(have, port), {}, ALL, ID)
    assert [op.id for op in ops] == [("link", (None, "fr-b"))]
    # the control: nothing else on it, it goes
    ops = diff(have, {}, ALL, ID)
    assert {op.id for op in ops} == {("link", (None, "br9")), ("link", (None, "fr-b"))}
    bridge = next(op for op in ops if op.id == ("link", (None, "br9")))
    assert words(bridge) == ['link "br9" (a bridge of this state file) has no vm']


def test_the_conntrack_rule_is_kept_while_another_tagged_rule_stays():
    t = vm("t", 1, backend="iptables")
    have = {k: o for k, o in want(t).items() if k[0] == "iptables rule"}
    theirs = IptRule("filter", "FORWARD", "-i fr-z -j DROP", f"{OTHER}:z", None)
    ops = diff(plus(have, theirs), {}, ALL, ID)
    assert ("iptables rule", conntrack().key) not in {op.id for op in ops}
    assert len(ops) == len(have) - 1
    ops = diff(have, {}, ALL, ID)  # the control: the last rule goes with the last block
    assert len(ops) == len(have)


def test_forwarding_goes_back_only_when_no_link_of_fireroutes_stays():
    a = vm("a", 0)
    have = plus(want(a), Forwarding("1", before="0"))
    ops = diff(have, {}, ALL, ID)
    (back,) = [op for op in ops if op.obj.kind == "forwarding"]
    assert back.verb == DELETE and back.obj.text("delete") == "net.ipv4.ip_forward=0"
    theirs = Link("fr-z", "tun", f"{OTHER}:z", None, f"fireroute:{OTHER}:z", uid=0)
    assert not [op for op in diff(plus(have, theirs), {}, ALL, ID) if op.obj.kind == "forwarding"]
    unknown = plus(want(a), Forwarding("1"))  # what it was before is not known: left on
    assert not [op for op in diff(unknown, {}, ALL, ID) if op.obj.kind == "forwarding"]


# -- scope ------------------------------------------------------------------------------------


def test_a_named_scope_looks_for_no_strays_and_no_other_vms_orphans():
    a, b = vm("a", 0), vm("b", 1)
    d = want(a)
    stray = element("taps", '"fr-z"', "")
    have = plus(want(a, b), stray)
    named = diff(have, d, Scope(["a"]), ID)
    assert named == []
    assert {op.obj.vm for op in diff(have, d, Scope(["b"]), ID)} == {"b"}
    everything = diff(have, d, ALL, ID)
    assert any(op.reason == STRAY for op in everything)


def test_a_sysctl_no_lease_asks_for_is_left_as_found():
    """route_localnet on a VM's device that fireroute did not set (a chained CNI plugin sets
    it for its own 127.0.0.1 port mapping) is nobody's drift; the same sysctl wanted and
    missing is the control."""
    d = want(vm("a", 0))
    tap = d[("link", (None, "fr-a"))]
    extra = Sysctl("net/ipv4/conf/fr-a/route_localnet", "1", "", tap.owner, tap.vm)
    assert diff(plus(d, extra), d, ALL, ID) == []
    w = want(vm("a", 0, publish=(Published.parse("127.0.0.1:22:22"),)))
    localnet = ("sysctl", (None, "net/ipv4/conf/fr-a/route_localnet"))
    op = one(diff(without(w, localnet), w, ALL, ID))
    assert op.verb == "create" and op.id == localnet
