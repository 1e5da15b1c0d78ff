"""The compiler (plan/ops.py ``compile``): a diff's operations (plan/diff.py) over the desired
state (want/render.py) print, through ``as_commands``, exactly what today's plans print (the
golden files); the same operations applied to the fake kernel make the desired state, and a
down's take it away again."""

from pathlib import Path

from fireroute.kernel.fake import Fake
from fireroute.kernel.kinds import MISSING, OK
from fireroute.model import Owner, Published
from fireroute.plan.compiler import compile
from fireroute.plan.diff import ALL, Scope, diff
from fireroute.plan.steps import Plan, as_commands, groups
from fireroute.want import render
from fireroute.want.netns import Netns
from fireroute.want.objects import Forwarding
from tests.unit.test_plan import _modes, vm

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
ID = "5ca1ab1e"
NAT_TABLE = ("nft table", (None, "ip", "firecracker"))
FORWARDING = ("forwarding", (None, "net.ipv4.ip_forward"))


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


def printed(*parts: list) -> str:
    return as_commands(Plan([s for part in parts for s in part]))


def want(*vms):
    return render.desired(list(vms), None, ID)


def without(index: dict, drop) -> dict:
    return {k: o for k, o in index.items() if not drop(o)}


def listed(index: dict) -> dict:
    """``index`` as the kernel lists it: an inserted iptables rule above those of its chain
    already there (the second of a VM's FORWARD-policy fix above the first)."""
    out: dict = {}
    for k, o in index.items():
        if o.kind == "iptables rule" and o.insert:
            at = next((i for i, x in enumerate(out.values()) if _chain(x) == _chain(o)), None)
            if at is not None:
                items = list(out.items())
                out = dict(items[:at] + [(k, o)] + items[at:])
                continue
        out[k] = o
    return out


def _chain(o) -> tuple:
    return (o.kind, getattr(o, "table", None), getattr(o, "chain", None))


# -- the golden files ---------------------------------------------------------------------------


def test_up_nft_golden():
    """The first VM of a NAT table, forwarding off before: everything is missing. Declared
    (a table of that name may be there: another state file's), its undo takes back the
    VM's elements, never the table; made exclusively, the undo deletes the table."""
    ops = diff({}, want(vm("web-1", 0)), ALL, ID)
    steps = compile(ops, before="0")
    assert printed(steps) == golden("up-nft.txt")
    nft = next(s for s in steps if s.tool == "nft")
    (undo,) = [u.text for u in nft.undo]
    assert "delete table" not in undo and 'delete element ip firecracker taps { "fr-web-1"' in undo
    made = next(s for s in compile(ops, {("ip", "firecracker")}) if s.tool == "nft")
    assert [u.text for u in made.undo] == [
        "add table ip firecracker\ndelete table ip firecracker\n"
    ]
    fwd = next(s for s in steps if s.text == "net.ipv4.ip_forward=1")
    assert [u.text for u in fwd.undo] == ["net.ipv4.ip_forward=0"]
    tap = steps[0]
    assert [u.text for u in tap.undo] == ["link del dev fr-web-1"]


def test_up_iptables_golden():
    """An iptables VM, forwarding already on: the conntrack rule first, each rule undone by
    its delete."""
    v = vm("web-2", 1, backend="iptables", owner=Owner(1000, 1000))
    ops = diff({FORWARDING: Forwarding("1")}, want(v), ALL, ID)
    steps = compile(ops)
    assert printed(steps) == golden("up-iptables.txt")
    for s in steps:
        if s.tool == "iptables":
            assert [u.text for u in s.undo] == ["-D" + s.text[2:]], s.text


def test_down_nft_two_golden():
    """Two of three VMs of a table go: their taps as one group, their elements removed."""
    a, b, c = vm("a", 0), vm("b", 1), vm("c", 2)
    have = want(a, b, c)
    ops = diff(have, want(c), Scope({"a", "b"}), ID)
    assert printed(compile(ops, found=have)) == golden("down-nft-two.txt")


def _links_modes(vms: list) -> tuple[str, str]:
    """The up and the down of ``vms``' links (and a bridge we make), printed."""
    links = render.bridge_objects("br9", vms, ID) + [o for v in vms for o in render.links(v)]
    keys = set(render.index(links))
    desired = want(*vms)
    up = compile(diff(without(desired, lambda o: (o.kind, o.key) in keys), desired, ALL, ID))
    have = {k: o for k, o in desired.items() if k in keys}
    return printed(up), printed(compile(diff(have, {}, ALL, ID), found=have))


def _second_tap(text: str) -> str:
    """links-modes.txt with the second attachment's tap named tap1: its lines from its veth's
    add to its host end's address, and its mark in the down."""
    out, inside, marks = [], False, 0
    for line in text.splitlines(keepends=True):
        inside = (inside or "ip link add eth1 " in line) and "dev fr-i" not in line
        if "tap0 group 4152" in line:
            marks += 1
        out.append(line.replace("tap0", "tap1") if inside or marks == 2 else line)
        marks += marks == 2
    return "".join(out)


def test_links_modes_golden():
    """One VM of each link shape: made with a bridge we make, then taken down with it.

    The golden's two CNI attachments both name their tap ``tap0`` in one namespace (up
    refuses that: allocate.py _check_namespace). Keyed by (namespace, name), the desired state
    holds one such tap, so the up is compared with the second attachment's tap named tap1
    (every other byte as the golden); the down is the golden's, byte for byte."""
    up, down = _links_modes(_modes())
    expected_up, _, expected_down = golden("links-modes.txt").partition("# down\n")
    assert down == expected_down
    vms = _modes()
    vms[5].options.tap = "tap1"
    up, down = _links_modes(vms)
    assert up + "# down\n" + down == _second_tap(golden("links-modes.txt"))
    assert up.count("tap1") == 6 and down.count("tap1") == 1  # (the lines renamed)


def test_tables_golden():
    """A second and third VM's elements in a table that stays; the table deleted with its
    last VM; a bridge guest's first anti-spoofing entries (the table made exclusively); a
    VM's FORWARD-policy fix."""
    a, b = vm("a", 0), vm("b", 1, fix_forward_policy=True)
    br = vm("d", 2, mode="bridge", bridge="br9", guest="10.9.0.5/24", bridge_address="10.9.0.1/24")
    two = want(a, b)
    have = listed(without(two, lambda o: o.kind == "nft element"))
    later = compile(diff(have, two, ALL, ID))
    tables = {k: o for k, o in two.items() if k[0].startswith("nft ")}
    last = compile(diff(tables, {}, ALL, ID))
    guest = want(br)
    bridged = without(guest, lambda o: getattr(o, "family", "") == "bridge")
    first = compile(diff(bridged, guest, ALL, ID), exclusive={("bridge", "firecracker")})
    fixed = want(b)
    fix = compile(diff(without(fixed, lambda o: o.kind == "iptables rule"), fixed, ALL, ID))
    assert printed(later, last, first, fix) == golden("tables.txt")
    assert first[0].exclusive and not later[0].exclusive
    assert "delete element" in later[0].undo[0].text  # a table that stays: only ours go again


def test_a_later_vm_declares_only_the_sets_it_writes():
    a, b = vm("a", 0), vm("b", 1, allow_peers=True)
    both = want(a, b)
    have = without(both, lambda o: o.kind == "nft element" and o.vm == "b")
    (step,) = compile(diff(have, both, ALL, ID))
    assert "  set peers { type ifname; }" in step.text.splitlines()
    assert "  set metadata { type ifname; }" not in step.text.splitlines()
    assert "chain" not in step.text and "create table" not in step.text


def test_a_published_udp_port_forgets_its_flows():
    udp = Published.parse("5353:53/udp")
    tcp = Published.parse("8080:80")
    v = vm("a", 0, publish=(udp, tcp))
    both = want(vm("z", 3), v)
    steps = compile(diff(without(both, lambda o: o.vm == "a"), both, ALL, ID))
    flushes = [s.text for s in steps if s.tool == "conntrack"]
    assert flushes == ["-D -p udp --orig-port-dst 5353"]


# -- the fake kernel ----------------------------------------------------------------------------

POD = "/run/netns/pod"


def apply(fake: Fake, steps: list, force: bool = False) -> list[str]:
    """Apply the steps' operations as the executor runs the steps: one group per process."""
    out = []
    for group in groups(steps):
        ops = [op for s in group for op in getattr(s, "ops", ())]
        if ops:
            out += fake.apply(ops, force=force)
    return out


def carried(steps: list) -> set:
    """What the steps' operations touch."""
    return {(a.obj.kind, a.obj.key) for s in steps for a in getattr(s, "ops", ())}


def fake_vms() -> list:
    vms = _modes()
    vms[5].options.tap = "tap1"  # (the golden's two attachments share a tap name)
    return [*vms, vm("t", 6, backend="iptables"), vm("f", 7, fix_forward_policy=True)]


def seeded() -> Fake:
    fake = Fake()
    fake.seed(Netns(POD, "", None))  # the runtime's namespace, not ours
    return fake


def kernel_made(fake: Fake) -> dict:
    """What the fake holds that fireroute made: less the runtime's namespace and the
    loopback address the kernel gives an up lo."""
    return {
        k: o
        for k, o in fake.read().items()
        if k != ("netns", (POD,)) and not (o.kind == "addr" and o.key[1] == "lo")
    }


def test_the_ops_of_an_up_make_the_desired_state_and_a_downs_take_it_away():
    vms = fake_vms()
    desired = want(*vms)
    fake = seeded()
    ops = diff({}, desired, ALL, ID)
    steps = compile(ops, exclusive={("ip", "firecracker")}, before="0")
    assert carried(steps) == {(op.obj.kind, op.obj.key) for op in ops}  # each op, in a step
    assert set(apply(fake, steps)) == {OK}
    assert fake.forwarding == "1"
    assert kernel_made(fake) == {k: o for k, o in desired.items() if k != FORWARDING}
    have = {**desired, FORWARDING: Forwarding("1", before="0")}
    ops = diff(have, {}, ALL, ID)
    down = compile(ops, found=have)
    assert carried(down) >= {(op.obj.kind, op.obj.key) for op in ops}
    assert set(apply(fake, down, force=True)) <= {OK, MISSING}  # (a host end gone with its veth)
    assert kernel_made(fake) == {}
    assert fake.forwarding == "0"


def test_a_down_of_some_leaves_the_others_whole():
    vms = fake_vms()
    stay = [v for v in vms if v.name in ("n", "t")]
    fake = seeded()
    new = {("ip", "firecracker")}
    assert set(apply(fake, compile(diff({}, want(*vms), ALL, ID), new, before="0"))) == {OK}
    have = want(*vms)
    wanted = render.desired(stay, None, ID, held=render.held(have))  # the parts stay
    down = compile(diff(have, wanted, Scope({v.name for v in vms} - {"n", "t"}), ID), found=have)
    assert set(apply(fake, down, force=True)) <= {OK, MISSING}
    assert kernel_made(fake) == {k: o for k, o in wanted.items() if k != FORWARDING}
    assert fake.forwarding == "1"


def test_a_tap_whose_owner_differs_is_made_again_whole():
    """replace: the found tap deleted first, then made with what goes with it."""
    v = vm("a", 0, owner=Owner(1000, 1000))
    desired = want(v)
    tap = ("link", (None, "fr-a"))
    have = {**desired, tap: vm_tap(desired[tap], uid=0, gid=None)}
    steps = compile(diff(have, desired, ALL, ID))
    assert [s.text for s in steps] == [
        "link del dev fr-a",
        "tuntap add dev fr-a mode tap user 1000 group 1000",
        "address add 172.16.0.1/30 dev fr-a",
        "link set dev fr-a group 4151 alias fireroute:5ca1ab1e:a up",
        "net/ipv6/conf/fr-a/disable_ipv6=1",
    ]


def vm_tap(link, **changed):
    import copy

    out = copy.copy(link)
    for k, v in changed.items():
        setattr(out, k, v)
    return out


def test_one_tap_goes_by_name_and_a_first_table_may_be_made_exclusively():
    a = vm("a", 0)
    have = want(a)
    down = compile(diff(have, {**want(), FORWARDING: have[FORWARDING]}, ALL, ID), found=have)
    assert [s.text for s in down][:2] == [
        "link del dev fr-a",
        "add table ip firecracker\ndelete table ip firecracker\n",
    ]
    up = compile(diff({}, have, ALL, ID), exclusive={("ip", "firecracker")})
    (nft,) = [s for s in up if s.tool == "nft"]
    assert nft.exclusive
    assert nft.text.startswith('create table ip firecracker { comment "fireroute"; }\ntable ip')


# -- every shape, step by step: what the old planners printed ----------------------------------


def _every_lease() -> list:
    """Every mode (the attachments with taps of their own), a masquerading bridge guest, a
    VM with an egress policy, UDP and TCP ports and the FORWARD-policy fix."""
    from ipaddress import IPv4Network

    vms = _modes()
    vms[5].options.tap = "tap1"
    ports = (Published.parse("5353:53/udp"), Published.parse("10.0.0.1:5300:53/udp"))
    return [
        *vms,
        vm("m", 6, mode="bridge", bridge="br9", guest="10.9.0.6/24", masquerade=True),
        vm("e", 7, egress="none", allow_out=(IPv4Network("192.0.2.0/24"),), publish=ports),
        vm("f", 8, fix_forward_policy=True, allow_metadata=True),
    ]


def shown(steps: list, indent: str = "") -> str:
    """Each step as what tells it apart: tool, words, VM, namespace, table, exclusive; its
    text; its undo (indented)."""
    out = []
    for s in steps:
        head = f"{s.tool} | {s.what} | vm={s.vm} netns={s.netns} table={s.table}"
        out.append(f"{indent}## {head}{' exclusive' if s.exclusive else ''}\n")
        out += [f"{indent}{line}\n" for line in s.text.splitlines()]
        out.append(shown(list(s.undo), indent + "    undo: "))
    return "".join(out)


def every_shape() -> str:
    """``up`` of the first VMs of a table and a bridge (made exclusively, forwarding off
    before), ``down`` of the last, and a ``down`` of some (the tables stay): the old
    planners' steps (modes.links_up/down, set_forwarding, nft.vms_up/vms_down, the policy
    fix, the UDP flushes, bridge.filter_up/down, iptables.rules_down), undo and words
    included, as the golden file recorded them."""
    vms = _every_lease()
    desired = want(*vms)
    up = compile(
        diff({}, desired, ALL, ID),
        exclusive={("ip", "firecracker"), ("bridge", "firecracker")},
        before="0",
    )
    have = listed({**desired, FORWARDING: Forwarding("1", before="0")})
    down = compile(diff(have, {}, ALL, ID), found=have)
    going = [v for v in vms if v.name in ("n", "m", "e")]
    have = listed(want(*vms))
    stays = render.desired([v for v in vms if v not in going], None, ID, held=render.held(have))
    some = compile(diff(have, stays, Scope(v.name for v in going), ID), found=have)
    return f"# up\n{shown(up)}# down\n{shown(down)}# down of some\n{shown(some)}"


def test_an_up_and_a_down_of_every_shape_golden():
    from tests.unit.test_plan import golden as compare

    compare("every-shape.txt", every_shape())
