"""The wanted objects of a VM: keys, owner tags, and the exact lines they print."""

from ipaddress import IPv4Network

from fireroute.model import Options, Owner, Published, Vm
from fireroute.plan.ops import create_steps, delete_step, sysctl_step
from fireroute.want import tap
from fireroute.want.objects import Addr, Link, Sysctl


def vm(name: str, ordinal: int, **kw) -> Vm:
    net = IPv4Network(f"172.16.0.{4 * ordinal}/30")
    v = Vm(
        name, net, f"fr-{name}", "06:00:AC:10:00:%02X" % (4 * ordinal + 2), "eth0", Options(**kw)
    )
    v.owner = "5ca1ab1e"
    return v


def test_nat_tap_objects():
    objs = tap.tap(vm("a", 0, owner=Owner(1000, 1001)))
    assert [type(o) for o in objs] == [Link, Addr, Sysctl]
    link, addr, v6 = objs
    assert link.key == (None, "fr-a") and link.owner == "5ca1ab1e:a" and link.vm == "a"
    assert link.alias == "fireroute:5ca1ab1e:a" and (link.uid, link.gid) == (1000, 1001)
    assert link.master is None
    assert addr.key == (None, "fr-a", "172.16.0.1/30") and addr.owner == link.owner
    assert v6.key == (None, "net/ipv6/conf/fr-a/disable_ipv6") and v6.attrs == ("1",)
    assert link.text("create") == "tuntap add dev fr-a mode tap user 1000 group 1001"
    assert link.text("set") == "link set dev fr-a group 4151 alias fireroute:5ca1ab1e:a up"
    assert link.text("delete") == "link del dev fr-a"
    assert addr.text("create") == "address add 172.16.0.1/30 dev fr-a"
    assert v6.text() == "net/ipv6/conf/fr-a/disable_ipv6=1"


def test_bridge_tap_is_a_port_without_address():
    objs = tap.tap(vm("b", 1, mode="bridge", bridge="br9", dhcp=True))
    assert len(objs) == 1
    (link,) = objs
    assert isinstance(link, Link) and link.master == "br9" and (link.uid, link.gid) == (0, None)
    assert link.text("create") == "tuntap add dev fr-b mode tap user 0"
    assert link.text("set") == (
        "link set dev fr-b master br9 group 4151 alias fireroute:5ca1ab1e:b up"
    )
    assert link.what("set") == 'attach tap "fr-b" to "br9"'


def test_a_localhost_port_adds_exactly_one_sysctl():
    plain = tap.tap(vm("a", 0, publish=(Published.parse("8080:80"),)))
    local = tap.tap(vm("a", 0, publish=(Published.parse("127.0.0.1:2222:22"),)))
    assert local[: len(plain)] == plain and len(local) == len(plain) + 1
    extra = local[-1]
    assert isinstance(extra, Sysctl) and extra.text() == "net/ipv4/conf/fr-a/route_localnet=1"


def test_equality_is_key_and_attrs():
    a, b = tap.link(vm("a", 0)), tap.link(vm("a", 0))
    assert a == b and hash(a) == hash(b)
    b.up = False
    assert a != b and a.key == b.key  # the same link, wanted differently
    assert tap.link(vm("a", 0, owner=Owner(7, None))) != a  # another owner: not the same tap
    assert tap.link(vm("c", 0)) != a  # another name: another key


def test_steps_render_from_the_objects():
    """Steps print exactly what the objects print, with each add's undo."""
    v = vm("a", 0, owner=Owner(1000, None))
    link, addr, v6 = tap.tap(v)
    steps = create_steps([link, addr])
    assert [s.text for s in steps] == [link.text("create"), addr.text("create"), link.text("set")]
    assert [u.text for u in steps[0].undo] == ["link del dev fr-a"]
    assert [s.what for s in steps] == [
        'create tap "fr-a"',
        'address tap "fr-a"',
        'bring up tap "fr-a"',
    ]
    assert sysctl_step(v6).text == v6.text() == "net/ipv6/conf/fr-a/disable_ipv6=1"
    down = delete_step(link)  # one VM's down deletes what its up made, in the same words
    assert (down.text, down.what) == (link.text("delete"), 'delete tap "fr-a"')
    b = vm("b", 1, mode="bridge", bridge="br9", dhcp=True)
    assert [s.text for s in create_steps(tap.tap(b))] == [
        o.text(x) for o in tap.tap(b) for x in ("create", "set")
    ]


def clone_vm(**kw) -> Vm:
    v = vm("c", 3, mode="clone", **kw)
    v.netns_name = "fireroute-5ca1ab1e-c"
    return v


def test_veth_pair_is_the_blocks_first_two_addresses():
    from fireroute.addressing import veth_pair

    host_ip, ns_ip = veth_pair(IPv4Network("172.16.0.12/30"))
    assert (str(host_ip), str(ns_ip)) == ("172.16.0.13", "172.16.0.14")
    assert clone_vm().nat_source == ns_ip  # the host masquerades the namespace's end


def test_clone_objects():
    from fireroute.want import clone
    from fireroute.want.netns import Netns, Route
    from fireroute.want.tables import NftChain, NftTable

    objs = clone.clone(clone_vm())
    ns = "fireroute-5ca1ab1e-c"
    by = {(o.kind, o.key): o for o in objs}
    assert len(by) == len(objs)  # every object has its own key
    assert all(o.owner == "5ca1ab1e:c" and o.vm == "c" for o in objs)
    assert isinstance(objs[0], Netns) and objs[0].text("create") == f"netns add {ns}"
    veth = by["link", (None, "fr-c")]
    assert veth.peer == (ns, "veth0") and veth.alias == "fireroute:5ca1ab1e:c"
    assert veth.text("create") == f"link add fr-c type veth peer name veth0 netns {ns}"
    assert ("addr", (None, "fr-c", "172.16.0.13/30")) in by
    assert ("addr", (ns, "veth0", "172.16.0.14/30")) in by
    assert by["link", (ns, "veth0")].peer == (None, "fr-c") and not by["link", (ns, "lo")].made
    assert by["link", (ns, "lo")].text("set") == "link set dev lo up"
    default = by["route", (ns, "default")]
    assert isinstance(default, Route) and default.text() == "route add default via 172.16.0.13"
    assert by["sysctl", (ns, "net.ipv4.ip_forward")].text() == "net.ipv4.ip_forward=1"
    table = by["nft table", (ns, "ip", "fireroute_clone")]
    chains = [o for o in objs if isinstance(o, NftChain)]
    assert isinstance(table, NftTable)
    assert [c.name for c in chains] == ["postrouting", "prerouting", "forward"]
    assert chains[0].rules == ('ip saddr 192.168.241.0/29 oifname "veth0" snat to 172.16.0.14',)
    assert chains[2].rules == ('iifname "vmtap0" ip saddr != 192.168.241.0/29 drop',)
    assert not [o for o in objs if isinstance(o, Route) and o.ns is None]  # no clone address


def test_an_explicit_clone_address_adds_one_host_route():
    from fireroute.want import clone
    from fireroute.want.netns import Route

    plain = clone.clone(clone_vm())
    objs = clone.clone(clone_vm(clone_address="10.200.0.7"))
    (route,) = [o for o in objs if isinstance(o, Route) and o.ns is None]
    assert len(objs) == len(plain) + 1
    assert route.text() == "route add 10.200.0.7/32 via 172.16.0.14 dev fr-c"
    assert route.shown() == "10.200.0.7 via 172.16.0.14 dev fr-c"  # as ``ip -j route`` says
    assert route.what() == "route clone address 10.200.0.7"


def test_a_made_bridge_is_tagged_for_its_state_file():
    from fireroute.plan.ops import create_steps
    from fireroute.want import bridge

    v = vm("b", 1, mode="bridge", bridge="br9", bridge_address="10.9.0.1/24", guest="10.9.0.5/24")
    br, addr = bridge.bridge(v)
    assert isinstance(br, Link) and br.key == (None, "br9") and br.owner == "5ca1ab1e:bridge:br9"
    assert br.alias == "fireroute:5ca1ab1e:bridge:br9" == bridge.alias("5ca1ab1e", "br9")
    assert br.text("create") == "link add name br9 address 0E:7E:CB:BB:BD:53 type bridge"
    assert br.text("set") == (
        "link set dev br9 address 0E:7E:CB:BB:BD:53 group 4151 "
        "alias fireroute:5ca1ab1e:bridge:br9 up"
    )
    assert isinstance(addr, Addr) and addr.text("create") == "address add 10.9.0.1/24 dev br9"
    steps = create_steps(bridge.bridge(v))
    assert [s.what for s in steps] == [
        'create bridge "br9"',
        'address bridge "br9"',
        'bring up bridge "br9"',
    ]
    assert [u.text for u in steps[0].undo] == ["link del dev br9"]
    # without --bridge-address the bridge is made bare
    dhcp = vm("d", 2, mode="bridge", bridge="br9", dhcp=True)
    assert [type(o) for o in bridge.bridge(dhcp)] == [Link]
    assert tap.link(dhcp).master == bridge.link(dhcp).name  # the tap is a port of it
