"""``restore`` as the diff applied (repair/heal.py), on the fake kernel (kernel/fake.py): a
host made by the compiled up of a NAT VM (owned, a 127.0.0.1 port), a bridge guest on a bridge
fireroute made, a clone and an nft VM with the FORWARD-policy fix; one kind of damage at a
time; restore's steps, applied to the fake, make it what the leases want again, and then the
diff is empty (a second restore has nothing to do)."""

from __future__ import annotations

import copy

import pytest

from fireroute.kernel.fake import Fake
from fireroute.kernel.kinds import MISSING, OK
from fireroute.kernel.read import Current
from fireroute.plan.compiler import compile
from fireroute.plan.diff import ALL, diff
from fireroute.repair.heal import healing
from fireroute.repair.picture import Picture
from fireroute.want.nft import NftElement
from fireroute.want.objects import Forwarding, Link
from fireroute.want.tables import NftChain, NftSet
from tests.unit.test_compile import FORWARDING, ID, apply, kernel_made, seeded, want
from tests.unit.test_plan import _modes, vm

NAT_T = (None, "ip", "firecracker")
NEW = {("ip", "firecracker")}  # a table up makes: created exclusively, holding what its VMs need


def vms() -> list:
    nat, made, _dhcp, cl = _modes()[:4]
    return [nat, made, cl, vm("f", 7, fix_forward_policy=True)]


def made() -> tuple[Fake, dict]:
    """The fake host with every VM up, and what the leases want."""
    desired = want(*vms())
    fake = seeded()
    assert set(apply(fake, compile(diff({}, desired, ALL, ID), NEW, before="0"))) == {OK}
    return fake, desired


def seen(fake: Fake, desired: dict, leases: list) -> Picture:
    """The fake read as kernel/read.py reads the kernel."""
    cur = Current()
    for o in kernel_made(fake).values():  # (lo's address: the reader leaves it out)
        cur.add(o)
    cur.forwarding = fake.forwarding
    cur.inside = {o.ns for o in fake.read().values() if o.ns is not None}
    pic = Picture(cur, desired, ID, leases)
    pic.have[FORWARDING] = Forwarding(fake.forwarding, "0")
    return pic


def restored(fake: Fake, desired: dict) -> list:
    """restore, on the fake: its steps, after which the fake is what the leases want."""
    leases = vms()
    todo = healing(seen(fake, desired, leases), seen(fake, desired, leases).diff())
    apply(fake, todo.clear, force=True)
    assert set(apply(fake, todo.steps)) == {OK}, todo.steps
    assert kernel_made(fake) == {k: o for k, o in desired.items() if k != FORWARDING}
    assert fake.forwarding == "1"
    again = seen(fake, desired, leases)
    assert again.diff() == [] and healing(again, []).steps == []
    return todo.clear + todo.steps


def drop(fake: Fake, *keys: tuple) -> None:
    for k in keys:
        fake.objs.pop(k)


def test_nothing_to_do_on_a_healthy_host():
    fake, desired = made()
    pic = seen(fake, desired, vms())
    assert pic.diff() == []
    assert healing(pic, pic.diff()).steps == []


@pytest.mark.parametrize(
    "keys, text",
    [
        ([("link", (None, "fr-n"))], "tuntap add"),
        ([("addr", (None, "fr-n", "172.16.0.1/30"))], "address add 172.16.0.1/30 dev fr-n"),
        ([("sysctl", (None, "net/ipv6/conf/fr-n/disable_ipv6"))], "disable_ipv6=1"),
        ([("nft element", (*NAT_T, "taps", '"fr-n"'))], 'taps { "fr-n" comment'),
        ([("nft chain", (*NAT_T, "guest_in"))], "chain guest_in { }"),
        ([("nft set", (*NAT_T, "peers"))], "set peers { type ifname; }"),
        ([("link", (None, "br9"))], "link add name br9 address 0E:7E:CB:BB:BD:53 type bridge"),
        ([("netns", ("fireroute-5ca1ab1e-c",))], "netns add fireroute-5ca1ab1e-c"),
        ([("link", ("fireroute-5ca1ab1e-c", "vmtap0"))], "ip link del dev fr-c"),
        (
            [
                (
                    "iptables rule",
                    (
                        "filter",
                        "-A FORWARD -i fr-f -m comment --comment fireroute:5ca1ab1e:f -j ACCEPT",
                    ),
                )
            ],
            "-I FORWARD -i fr-f",
        ),
    ],  # fmt: skip
    ids=[
        "tap",
        "address",
        "ipv6",
        "element",
        "chain",
        "set",
        "bridge",
        "namespace",
        "tap in a namespace (made again whole)",
        "policy fix",
    ],  # fmt: skip
)
def test_what_is_missing_is_made_again(keys, text):
    fake, desired = made()
    for k in keys:  # (what goes with it goes too)
        gone = fake.objs.get(k)
        if gone is not None and k[0] in ("nft set", "nft chain"):
            drop(fake, k)
        elif gone is not None:
            fake.do("delete", gone)
    from fireroute.plan.steps import Plan, as_commands

    assert text in as_commands(Plan(restored(fake, desired)))


def test_a_tap_of_another_owner_is_made_again_and_a_veth_in_its_place_is_only_set():
    fake, desired = made()
    tap = fake.objs[("link", (None, "fr-n"))]
    fake.objs[("link", (None, "fr-n"))] = _like(tap, uid=0, gid=None)
    texts = [s.text for s in restored(fake, desired)]
    assert texts[0] == "link del dev fr-n" and texts[1].startswith("tuntap add dev fr-n")
    # a link of another kind (a veth standing in for the tap): set, never deleted
    fake, desired = made()
    fake.objs[("link", (None, "fr-n"))] = _like(tap, link_kind="veth", up=False, uid=None)
    leases = vms()
    todo = healing(seen(fake, desired, leases), seen(fake, desired, leases).diff())
    assert [s.text for s in todo.steps] == [
        "link set dev fr-n group 4151 alias fireroute:5ca1ab1e:n up"
    ]


def _like(link: Link, **attrs: object) -> Link:
    out = copy.copy(link)
    for a, v in attrs.items():
        setattr(out, a, v)
    return out


def test_strays_in_our_table_go_another_state_files_stay():
    fake, desired = made()
    table = desired[("nft table", NAT_T)]
    theirs = NftElement("ip", "firecracker", "taps", '"fr-z"', "beefcafe:z", None)
    stray = NftElement("ip", "firecracker", "taps", '"fr-y"', "", None)
    evil = NftChain(table, "evil", "", ("accept",))
    fake.seed(theirs, stray, evil, NftSet(table, "evil_set", "ifname"))
    texts = "".join(s.text for s in restored_with(fake, desired, keep=[theirs]))
    assert 'delete element ip firecracker taps { "fr-y" comment "" }' in texts
    assert "flush chain ip firecracker evil\ndelete chain ip firecracker evil" in texts
    assert "delete set ip firecracker evil_set" in texts
    assert '"fr-z"' not in texts


def restored_with(fake: Fake, desired: dict, keep: list) -> list:
    """``restored``, with objects of another state file that stay."""
    leases = vms()
    pic = seen(fake, desired, leases)
    todo = healing(pic, pic.diff())
    assert set(apply(fake, todo.clear + todo.steps)) == {OK}
    made_now = kernel_made(fake)
    for o in keep:
        assert made_now.pop((o.kind, o.key)) is o
    assert made_now == {k: o for k, o in desired.items() if k != FORWARDING}
    return todo.steps


def test_a_set_of_another_type_is_declared_again_with_the_chains_in_one_transaction():
    """The kernel refuses to delete a set a rule uses: the chains are flushed first, in the
    same transaction, and declared again after the set."""
    fake, desired = made()
    key = ("nft set", (*NAT_T, "taps"))
    fake.objs[key] = _like(fake.objs[key], type="ipv4_addr")
    pic = seen(fake, desired, vms())
    (step,) = [s for s in healing(pic, pic.diff()).steps if "delete set" in s.text]
    text = step.text
    assert (
        text.index("flush chain ip firecracker forward")
        < text.index("delete set ip firecracker taps")
        < text.index("set taps { type ifname; }")
        < text.index("add element ip firecracker taps")
    )


def test_forwarding_off_is_switched_on_with_its_undo():
    fake, desired = made()
    fake.forwarding = "0"
    pic = seen(fake, desired, vms())
    todo = healing(pic, pic.diff())
    (step,) = todo.steps
    assert todo.forwarding and step.text == "net.ipv4.ip_forward=1"
    assert [u.text for u in step.undo] == ["net.ipv4.ip_forward=0"]
    assert set(apply(fake, todo.steps)) == {OK} and fake.forwarding == "1"


def test_the_fake_refuses_what_restore_never_does():
    """The control: deleting a set a rule uses is refused by the fake, as by the kernel."""
    fake, desired = made()
    taps = fake.objs[("nft set", (*NAT_T, "taps"))]
    assert fake.apply([_Op("delete", taps)]) != [OK]
    assert MISSING not in fake.apply([_Op("delete", taps)])


class _Op:
    def __init__(self, verb: str, obj: object) -> None:
        self.verb, self.obj = verb, obj
