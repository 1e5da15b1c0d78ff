"""The desired state as one value (want/render.py): what it holds for one VM of each mode is
what today's plans make (the golden files), and the shared objects follow the shape."""

from pathlib import Path

from fireroute.model import Owner, Published
from fireroute.want import render, tap
from fireroute.want.iptables import IptRule
from fireroute.want.netns import TcRedirect
from fireroute.want.nft import RANK, NftElement, element_lines
from fireroute.want.objects import Forwarding, Link, Obj
from fireroute.want.shared import Population
from fireroute.want.tables import OPTIONAL, NftChain, NftSet, NftTable
from tests.unit.test_plan import _modes, vm

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
ID = "5ca1ab1e"
PREFIXES = ("ip -n ", "nsenter --net=", "ip netns exec ")


def command(line: str) -> str:
    """A golden line without the tool and the namespace it runs in."""
    if line.startswith(PREFIXES):
        line = line.split(" ", 3)[3] if line.startswith(PREFIXES[:2]) else line.split(" ", 4)[4]
        line = line.removeprefix("ip ").removeprefix("tc ").removeprefix("-w ")  # (sysctl)
    return line.removeprefix("ip ").removeprefix("sysctl -w ")


def lines_of(obj: Obj) -> list[str]:
    """The command lines today's plans make an object with."""
    if isinstance(obj, Link):
        return ([obj.text("create")] if obj.made else []) + [obj.text("set")]
    if isinstance(obj, TcRedirect):
        return obj.lines()
    if obj.kind in ("netns", "addr", "route"):
        return [obj.text("create")]
    return [obj.text("set")] if obj.kind == "sysctl" else []


def golden_lines(name: str, until: str = "# down") -> set[str]:
    text = (GOLDEN / name).read_text().split(until)[0]
    out, heredoc = set(), False
    for line in text.splitlines():
        heredoc = (heredoc or "<<'EOF'" in line) and line != "EOF"
        if not heredoc and line != "EOF":
            out.add(command(line))
    return out


def test_one_vm_of_each_mode_is_what_the_link_plans_make():
    """links-modes.txt (NAT with a 127.0.0.1 port, a made bridge and two of its guests, a
    clone, two CNI attachments): every line of it, and nothing else, from ``vm(lease)`` and
    the bridge the shared objects add."""
    vms = _modes()
    objs = render.bridge_objects("br9", vms, ID) + [o for v in vms for o in render.links(v)]
    made = {line for o in objs for line in lines_of(o)}
    assert made == golden_lines("links-modes.txt")
    (clone,) = [v for v in vms if v.mode == "clone"]
    objs = render.vm(clone)
    (table,) = [o for o in objs if isinstance(o, NftTable)]
    chains = [o for o in objs if isinstance(o, NftChain)]
    assert table.script(chains) in (GOLDEN / "links-modes.txt").read_text()


def test_a_nat_vm_up_is_the_golden_plan():
    """up-nft.txt: the tap's lines, forwarding, the table's sets, chains and rules and the
    VM's elements, all from ``desired`` and nothing more."""
    v = vm("web-1", 0)
    whole = {"firecracker": OPTIONAL}  # a table holding every part (PARTS): today's text
    want = render.desired([v], None, ID, held=whole)
    kinds = {k[0] for k in want}
    assert kinds == {
        *("link", "addr", "sysctl", "forwarding", "nft table", "nft set", "nft chain"),
        "nft element",
    }
    text = (GOLDEN / "up-nft.txt").read_text()
    lines = set(text.splitlines())
    for o in want.values():
        if isinstance(o, NftSet):
            assert o.text().rstrip("\n") in lines, o
        elif isinstance(o, NftChain):
            header = f"  chain {o.name} {{ {o.header} }}" if o.header else f"  chain {o.name} {{ }}"
            assert header in lines
            assert all(f"add rule ip firecracker {o.name} {r}" in lines for r in o.rules)
        elif isinstance(o, Forwarding):
            assert f"sysctl -w {o.text()}" in lines
    rules = {line for line in lines if line.startswith("add rule")}
    chains = [o for o in want.values() if isinstance(o, NftChain)]
    assert len(rules) == sum(len(c.rules) for c in chains)
    elems = [o for o in want.values() if isinstance(o, NftElement)]
    assert element_lines("add", "ip", "firecracker", elems, RANK) in text
    assert sum(1 for line in lines if line.startswith("add element")) == len({e.set for e in elems})
    sets = [o for o in want.values() if isinstance(o, NftSet)]
    assert len(sets) == sum(1 for line in lines if line.startswith(("  set ", "  map ")))
    head = {line for o in tap.tap(v) for line in lines_of(o)}
    assert head == {command(line) for line in text.splitlines()[:4]}


def test_an_iptables_vm_up_is_the_golden_plan():
    """up-iptables.txt: the shared conntrack rule, then the VM's block, in that order."""
    v = vm("web-2", 1, backend="iptables", owner=Owner(1000, 1000))
    want = render.desired([v], None, ID)
    rules = [o.text("create") for o in want.values() if isinstance(o, IptRule)]
    text = (GOLDEN / "up-iptables.txt").read_text()
    golden = [line for line in text.splitlines() if line.startswith(("-A", "-I"))]
    assert sorted(rules) == sorted(golden) and rules[0] == golden[0]  # the shared rule first
    assert not any(isinstance(o, NftTable) for o in want.values())  # no nft table at all


def test_tables_golden_elements_and_forward_policy_fix():
    """tables.txt: two NAT VMs' elements (one with the FORWARD-policy fix) and a bridge
    guest's anti-spoofing elements with the bridge table's chain."""
    a, b = vm("a", 0), vm("b", 1, fix_forward_policy=True)
    br = vm("d", 2, mode="bridge", bridge="br9", guest="10.9.0.5/24", bridge_address="10.9.0.1/24")
    want = render.desired([a, b, br], None, ID)
    text = (GOLDEN / "tables.txt").read_text()
    lines = set(text.splitlines())
    elems = [o for o in want.values() if isinstance(o, NftElement)]
    nat = [e for e in elems if e.family == "ip" and e.vm in ("a", "b")]
    assert element_lines("add", "ip", "firecracker", nat, RANK) in text
    bridged = [e for e in elems if e.family == "bridge"]
    assert element_lines("add", "bridge", "firecracker", bridged, RANK) in text
    fix = [o.text("create") for o in want.values() if isinstance(o, IptRule)]
    assert sorted(fix) == sorted(line for line in lines if line.startswith("-I"))
    chains = [o for o in want.values() if isinstance(o, NftChain) and o.family == "bridge"]
    assert [c.name for c in chains] == ["prerouting", "output"]
    for c in chains:
        assert all(f"add rule bridge firecracker {c.name} {r}" in lines for r in c.rules)


def test_shared_objects_follow_the_shape():
    """A table with its layout per family in use, the bridge (with the address a lease on it
    gives), a masquerading bridge's egress element, the conntrack rule, forwarding."""
    guest = vm("g", 1, mode="bridge", bridge="br9", guest="10.9.0.5/24", masquerade=True)
    ipt = vm("i", 2, backend="iptables", table="other")
    want = render.desired([guest, ipt], None, ID)
    tables = sorted(o.key for o in want.values() if isinstance(o, NftTable))
    assert tables == [(None, "bridge", "firecracker"), (None, "ip", "firecracker")]
    egress = [o for o in want.values() if isinstance(o, NftElement) and o.vm is None]
    assert [(e.set, e.value, e.owner) for e in egress] == [
        ("egress", '"br9" . "eth0"', f"{ID}:bridge:br9")
    ]
    assert ("iptables rule", ("filter", render.iptables.conntrack().saved)) in want
    assert ("forwarding", (None, "net.ipv4.ip_forward")) in want
    bridge = want["link", (None, "br9")]
    assert isinstance(bridge, Link) and bridge.alias == f"fireroute:{ID}:bridge:br9"
    # the shape of a state file whose bridge guests are not at hand: the bridge alone
    alone = render.desired([], Population.of([guest]), ID)
    assert [k for k in alone if k[0] in ("link", "addr")] == [("link", (None, "br9"))]
    assert render.desired([], Population(), ID) == {}  # nothing up: nothing wanted


def test_first_and_second_vm_of_a_table_want_the_same_table():
    one = render.desired([vm("a", 0)], None, ID)
    two = render.desired([vm("a", 0), vm("b", 1)], None, ID)
    layout = {k for k in one if k[0] in ("nft table", "nft set", "nft chain")}
    assert layout == {k for k in two if k[0] in ("nft table", "nft set", "nft chain")}
    assert len(layout) == 1 + 12 + 8  # table, sets, chains: no VM needs a part (PARTS)
    assert set(one) < set(two)
    held = render.desired([vm("a", 0)], None, ID, held={"firecracker": OPTIONAL})
    whole = {k for k in held if k[0] in ("nft table", "nft set", "nft chain")}
    assert len(whole) == 1 + 128 + 12 + 3 + 75  # every part the table holds stays wanted


def test_a_lone_vms_table_is_the_new_table_golden():
    """A VM alone in a table it makes wants what up-nft-new-table.txt declares, nothing more;
    a VM with an egress policy and a published port brings those parts (and only those)."""
    text = (GOLDEN / "up-nft-new-table.txt").read_text()
    declared = {line.strip() for line in text.splitlines() if line.startswith(("  set", "  chain"))}
    want = render.desired([vm("a", 0)], None, ID)
    sets = {o.text().strip() for o in want.values() if isinstance(o, NftSet)}
    chains = {o.name for o in want.values() if isinstance(o, NftChain)}
    assert sets == {line for line in declared if line.startswith("set")}
    assert chains == {line.split()[1] for line in declared if line.startswith("chain")}
    port = (Published.parse("8080:80"),)
    policy = render.desired([vm("a", 0, egress="public", publish=port)], None, ID)
    names = {o.name for o in policy.values() if isinstance(o, (NftSet, NftChain))}
    assert {"out_jump", "out_reject", "pub_any", "pub_addr", "pub_pre", "pub_out"} <= names
    assert len([n for n in names if n.startswith("out_deny_")]) == 1


def test_route_localnet_on_every_mode_host_device():
    """As up does: a 127.0.0.1 port turns route_localnet on for the host device of any
    mode (the NAT tap's with the tap, the others' after the links)."""
    port = (Published.parse("127.0.0.1:2222:22"),)
    cni = dict(netns="/run/netns/pod", container="c1", network="net", ifname="eth0")
    v = vm("p", 4, mode="cni", publish=port, **cni)
    paths = [o.key[1] for o in render.vm(v) if o.kind == "sysctl"]
    assert paths == [
        "net/ipv6/conf/eth0/disable_ipv6",  # (the namespace's veth and tap: IPv6 off too)
        "net/ipv6/conf/tap0/disable_ipv6",
        "net/ipv6/conf/fr-p/disable_ipv6",
        "net/ipv4/conf/fr-p/route_localnet",
    ]
    nat = [o.key[1] for o in render.vm(vm("n", 0, publish=port)) if o.kind == "sysctl"]
    assert nat.count("net/ipv4/conf/fr-n/route_localnet") == 1


def test_a_dhcp_bridge_guest_has_no_nat_entries():
    d = vm("d", 2, mode="bridge", bridge="br9", dhcp=True, fix_forward_policy=True)
    kinds = [o.kind for o in render.vm(d)]
    assert "iptables rule" not in kinds
    assert {o.family for o in render.vm(d) if isinstance(o, NftElement)} == {"bridge"}
