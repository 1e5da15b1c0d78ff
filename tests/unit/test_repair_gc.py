"""``gc``'s sweep (repair/collect.py) on the fake kernel: what this state file left that no
lease wants goes; another state file's objects, and what they share with it (the table, the
conntrack rule, forwarding), stay. With ``--state-id`` of a lost state file (no leases), that
file's objects go and this one's stay."""

from __future__ import annotations

from fireroute.kernel.fake import Fake
from fireroute.kernel.kinds import OK
from fireroute.kernel.read import Current
from fireroute.plan.compiler import compile
from fireroute.plan.diff import ALL, diff
from fireroute.repair.collect import leftovers, sweep
from fireroute.repair.picture import Picture
from fireroute.want import render
from fireroute.want.iptables import conntrack
from fireroute.want.objects import Forwarding, Link
from tests.unit.test_compile import FORWARDING, ID, NAT_TABLE, apply, kernel_made
from tests.unit.test_plan import vm

OTHER = "beefcafe"


def theirs(name: str, ordinal: int, **kw):  # noqa: ANN201
    v = vm(name, ordinal, **kw)
    v.owner = OTHER
    return v


def host(*files: tuple[str, list]) -> Fake:
    """The fake with each state file's VMs up, one after the other."""
    fake = Fake()
    have: dict = {}
    for instance, leases in files:
        want = render.desired(leases, None, instance, render.held(have))  # the parts stay
        steps = compile(diff(have, want, ALL, instance), before="0")
        assert set(apply(fake, steps)) == {OK}
        have = kernel_made(fake)
    return fake


def seen(fake: Fake, instance: str, leases: list, before: str | None = "0") -> Picture:
    cur = Current()
    for o in kernel_made(fake).values():
        cur.add(o)
    cur.forwarding = fake.forwarding
    held = render.held(cur.objs)  # as repair/picture.py: the parts a table holds stay
    pic = Picture(cur, render.desired(leases, None, instance, held), instance, leases)
    pic.have[FORWARDING] = Forwarding(fake.forwarding, before)
    return pic


def collected(fake: Fake, instance: str, leases: list, before: str | None = "0") -> list:
    steps = sweep(seen(fake, instance, leases, before))
    apply(fake, steps, force=True)
    return steps


def test_a_vm_the_state_file_forgot_goes_another_state_files_stays():
    a, b = vm("a", 0), vm("b", 1)
    z = theirs("z", 5)
    fake = host((ID, [a, b]), (OTHER, [z]))
    assert leftovers(seen(fake, ID, [a, b]).diff()) == []  # the control: nothing to collect
    collected(fake, ID, [a])
    made = kernel_made(fake)
    assert ("link", (None, "fr-b")) not in made
    assert not [o for o in made.values() if o.vm == "b"]
    for keep in (a, z):
        assert ("link", (None, keep.tap)) in made
        assert any(o.kind == "nft element" and o.vm == keep.name for o in made.values())
    assert NAT_TABLE in made and fake.forwarding == "1"
    assert leftovers(seen(fake, ID, [a]).diff()) == []  # a second gc: nothing


def test_the_state_id_of_a_lost_file_collects_that_files_objects_only():
    a = vm("a", 0)
    z, y = theirs("z", 5), theirs("y", 6, backend="iptables")
    fake = host((ID, [a]), (OTHER, [z, y]))
    collected(fake, OTHER, [], before=None)  # (its record is lost with it)
    made = kernel_made(fake)
    assert not [o for o in made.values() if o.owner.startswith(OTHER)]
    assert ("link", (None, "fr-a")) in made and NAT_TABLE in made
    assert ("iptables rule", conntrack().key) not in made  # no tagged rule is left
    assert fake.forwarding == "1"  # a's link stays: forwarding is left on


def test_the_conntrack_rule_stays_while_another_files_iptables_vm_has_rules():
    t = vm("t", 2, backend="iptables")
    y = theirs("y", 6, backend="iptables")
    fake = host((ID, [t]), (OTHER, [y]))
    collected(fake, ID, [])
    made = kernel_made(fake)
    assert ("iptables rule", conntrack().key) in made
    assert not [o for o in made.values() if o.vm == "t"]
    # the control: once no tagged rule stays, it goes
    collected(fake, OTHER, [], before=None)
    assert ("iptables rule", conntrack().key) not in kernel_made(fake)


def test_the_conntrack_rule_is_no_dhcp_bridge_guests():
    """want.shared decides: the rule serves the NAT members' blocks, and a bridge guest by
    DHCP on the iptables backend has none."""
    t = vm("t", 2, backend="iptables")
    dhcp = vm("d", 3, mode="bridge", bridge="br9", dhcp=True, backend="iptables")
    fake = host((ID, [t, dhcp]))
    collected(fake, ID, [dhcp])
    made = kernel_made(fake)
    assert ("iptables rule", conntrack().key) not in made
    assert ("link", (None, "fr-d")) in made and ("link", (None, "br9")) in made


def test_forwarding_goes_back_with_the_last_link():
    a = vm("a", 0)
    fake = host((ID, [a]))
    steps = collected(fake, ID, [])
    assert kernel_made(fake) == {} and fake.forwarding == "0"
    assert steps[-1].text == "net.ipv4.ip_forward=0"


def test_a_bridge_it_made_stays_while_another_link_is_on_it():
    b = vm("b", 1, mode="bridge", bridge="br9", bridge_address="10.9.0.1/24", guest="10.9.0.5/24")
    fake = host((ID, [b]))
    port = Link("veth9", "veth", "", None, "", master="br9", peer=(None, "veth9b"))
    fake.seed(port)
    collected(fake, ID, [])
    made = kernel_made(fake)
    assert ("link", (None, "br9")) in made and ("link", (None, "fr-b")) not in made
    fake.objs.pop(("link", (None, "veth9")))  # the control: nothing else on it, it goes
    collected(fake, ID, [])
    assert ("link", (None, "br9")) not in kernel_made(fake)
