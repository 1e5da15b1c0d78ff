"""A CNI attachment's wanted objects (want/cni.py): keys, owner tags, the MAC of each link, the
MTU, the delegated /32 and its route, the redirects, and the lines they print; and check
comparing a kernel against those same objects."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from unittest import mock

from fireroute.kernel.read import as_wanted, link_of
from fireroute.model import Options, Owner, Vm
from fireroute.plan.diff import ALL, diff
from fireroute.plan.words import Context, said
from fireroute.want import cni
from fireroute.want.netns import Route, TcRedirect
from fireroute.want.objects import Addr, Link, Sysctl

NS = "/run/netns/pod"
TAG = "5ca1ab1e"


def attachment(name: str, ordinal: int, **kw) -> Vm:
    o = Options(mode="cni", netns=NS, container="c1", network="net", ifname="eth0", **kw)
    v = Vm(name, IPv4Network(f"172.16.0.{4 * ordinal}/30"), f"fr-{name}", "", "eth0", o)
    v.owner = TAG
    return v


def pool() -> Vm:
    return attachment("p", 4, owner=Owner(1000, 1001))


def ipam(mtu: int | None = 1400) -> Vm:
    return attachment("i", 5, guest="10.22.0.9/24", gateway="10.22.0.1", mtu=mtu)


def test_objects_keys_and_owner_tags():
    objs = cni.cni(pool())
    assert [type(o) for o in objs] == [
        *(Link, Link, TcRedirect, TcRedirect, Sysctl, Sysctl),
        *(Link, Addr, Sysctl),
    ]
    assert [o.key for o in objs] == [
        (NS, "eth0"),
        (NS, "tap0"),
        (NS, "eth0"),
        (NS, "tap0"),
        (NS, "net/ipv6/conf/eth0/disable_ipv6"),
        (NS, "net/ipv6/conf/tap0/disable_ipv6"),
        (None, "fr-p"),
        (None, "fr-p", "172.16.0.17/30"),
        (None, "net/ipv6/conf/fr-p/disable_ipv6"),
    ]
    assert {o.owner for o in objs} == {f"{TAG}:p"} and {o.vm for o in objs} == {"p"}
    veth, tun, there, back, _, _, host = objs[:7]
    assert {veth.alias, tun.alias, host.alias} == {f"fireroute:{TAG}:p"}
    assert (tun.uid, tun.gid) == (1000, 1001) and tun.link_kind == "tun"
    assert veth.peer == (None, "fr-p") and host.peer == (NS, "eth0")
    assert veth.made and tun.made and not host.made  # the host end comes with the veth's add
    assert (veth.group, tun.group, host.group) == (None, None, 4151)
    assert (there.src, there.dst, back.src, back.dst) == ("eth0", "tap0", "tap0", "eth0")


def test_each_link_has_its_own_mac_from_the_guest_address():
    veth, tun, host = cni.veth(pool()), cni.tun(pool()), cni.host_veth(pool())
    assert (host.mac, veth.mac, tun.mac) == (
        "0A:00:AC:10:00:12",
        "0A:01:AC:10:00:12",
        "0A:02:AC:10:00:12",
    )
    assert veth.peer_mac == host.mac
    assert veth.text("create") == (
        "link add eth0 address 0A:01:AC:10:00:12 type veth peer name fr-p "
        "address 0A:00:AC:10:00:12 netns $$"
    )
    # a tap is made without a MAC (tuntap takes none): it is set when brought up
    assert tun.text("create") == "tuntap add dev tap0 mode tap user 1000 group 1001"
    assert tun.text("set") == (
        f"link set dev tap0 address 0A:02:AC:10:00:12 alias fireroute:{TAG}:p up"
    )
    assert veth.text("set") == f"link set dev eth0 alias fireroute:{TAG}:p up"
    other = ipam()
    assert cni.tun(other).mac == "0A:02:0A:16:00:09" != tun.mac


def test_a_pool_address_is_the_blocks_first_and_has_no_route():
    v = pool()
    assert cni.host_address(v, cni.host_veth(v)).cidr == "172.16.0.17/30"
    assert cni.host_route(v) is None
    assert not any(isinstance(o, Route) for o in cni.cni(v))


def test_an_ipam_address_is_the_gateway_alone_with_a_route_to_the_guest():
    v = ipam()
    objs = cni.cni(v)
    (addr,) = [o for o in objs if isinstance(o, Addr)]
    assert addr.cidr == "10.22.0.1/32" and addr.key == (None, "fr-i", "10.22.0.1/32")
    (route,) = [o for o in objs if isinstance(o, Route)]
    assert route.key == (None, "10.22.0.9/32") and route.attrs == (None, "fr-i")
    assert route.owner == f"{TAG}:i"
    assert route.text("create") == "route add 10.22.0.9/32 dev fr-i"
    assert route.shown() == "10.22.0.9 dev fr-i"  # as the reader keeps `ip -j route`'s entry
    assert route.what() == 'route guest 10.22.0.9 to "fr-i"'


def test_mtu_on_all_three_links_only_when_asked():
    v = ipam()
    links = [cni.veth(v), cni.tun(v), cni.host_veth(v)]
    assert [link.mtu for link in links] == [1400, 1400, 1400]
    assert links[1].text("set") == (
        f"link set dev tap0 mtu 1400 address 0A:02:0A:16:00:09 alias fireroute:{TAG}:i up"
    )
    assert (
        links[2].text("set") == f"link set dev fr-i mtu 1400 group 4151 alias fireroute:{TAG}:i up"
    )
    plain = ipam(mtu=None)
    assert [cni.veth(plain).mtu, cni.tun(plain).mtu, cni.host_veth(plain).mtu] == [None] * 3
    assert cni.veth(plain) != cni.veth(v)  # same key, another MTU: not the same object
    assert cni.veth(plain).key == cni.veth(v).key


def test_redirect_lines():
    there, back = cni.redirects(pool())
    assert there.lines() == [
        "qdisc add dev eth0 ingress",
        "filter add dev eth0 parent ffff: protocol all u32 match u32 0 0 action mirred egress "
        "redirect dev tap0",
    ]
    assert back.lines("delete") == ["qdisc del dev tap0 ingress"]
    assert there.what() == 'redirect "eth0" to "tap0"'
    assert there != TcRedirect("eth0", "fr-x", TAG, "p", NS)  # another target differs


def _kernel(v: Vm, route: bool, mtu: int) -> dict:
    """A kernel holding ``v``'s attachment as ``want.cni`` says, but for the MTU given (and
    the route to the delegated guest, when ``route``): each link as the reader reads it."""
    have = {}
    for o in cni.cni(v):
        if isinstance(o, Link):
            info = {"info_kind": o.link_kind, "info_data": {"user": "root"}}
            doc = {"ifname": o.name, "address": str(o.mac).lower(), "mtu": mtu, "flags": ["UP"],
                   "ifalias": o.alias, "group": str(o.group), "linkinfo": info}  # fmt: skip
            found = link_of(doc, o.ns, lambda name, group: 0 if name == "root" else None)
            found.peer, found.owner, found.vm = o.peer, o.owner, o.vm
            o = found
        if route or not isinstance(o, Route):
            have[(o.kind, o.key)] = o
    return have


def problems(have: dict, v: Vm) -> list[str]:
    """What check says of the attachment: the diff against its objects, in words."""
    want = {(o.kind, o.key): o for o in cni.cni(v)}
    have = {k: as_wanted(o, want[k]) if k in want else o for k, o in have.items()}
    return [w for _, ws in said(diff(have, want, ALL, TAG), Context(want)) for w in ws]


def test_check_compares_the_kernel_against_the_same_objects():
    v = ipam()
    # positive control: the attachment as wanted, the route as the reader keeps it
    good = _kernel(v, True, 1400)
    assert problems(good, v) == []
    no_route = _kernel(v, False, 1400)
    assert problems(no_route, v) == ["host route 10.22.0.9/32 dev fr-i is missing"]
    wrong_mtu = _kernel(v, True, 1500)
    assert problems(wrong_mtu, v) == [
        f'"eth0" in "{NS}" has mtu 1500, not 1400',
        f'"tap0" in "{NS}" has mtu 1500, not 1400',
        'veth "fr-i" has mtu 1500, not 1400',
    ]
    wrong_mac = _kernel(v, True, 1400)
    wrong_mac[("link", (NS, "tap0"))].mac = "0A:02:0A:16:00:0A"
    assert problems(wrong_mac, v) == [
        f'tap in "{NS}": "tap0" has MAC 0a:02:0a:16:00:0a, not 0A:02:0A:16:00:09'
    ]


def test_the_namespace_links_have_ipv6_off_whatever_the_vm_has():
    """A wire has no IPv6 of its own (no link-local address, DAD or router solicitation on
    the guest's link): disable_ipv6=1 on the veth and the tap in the namespace, for a VM
    with IPv6 too (the redirects pass its frames below the IP layer)."""
    for v in (pool(), six()):
        off = [o for o in cni.cni(v) if isinstance(o, Sysctl) and o.ns == NS]
        assert [(o.path, o.value) for o in off] == [
            ("net/ipv6/conf/eth0/disable_ipv6", "1"),
            ("net/ipv6/conf/tap0/disable_ipv6", "1"),
        ]
        assert {o.owner for o in off} == {f"{TAG}:{v.name}"}
        assert off[1].what() == f'disable IPv6 on "tap0" in "{NS}"'


def six() -> Vm:
    v = attachment("s", 6)
    v.options.ipv6 = True
    v.net6 = IPv6Network("fd00:77:0:6::/64")
    return v


def test_a_vm_with_ipv6_has_the_host_end_of_a_v6_nat_tap():
    """The host end: IPv6 on, no link-local of the kernel's (``addrgenmode none`` in the
    line bringing it up, as it has carrier at once; addr_gen_mode 1 compared), fe80::1
    without DAD, the route to the VM's /64; IPv6 off on the host end of a v4-only one."""
    v = six()
    host = [o for o in cni.cni(v) if o.ns is None]
    assert [(o.kind, o.key) for o in host] == [
        ("link", (None, "fr-s")),
        ("addr", (None, "fr-s", "172.16.0.25/30")),
        ("sysctl", (None, "net/ipv6/conf/fr-s/disable_ipv6")),
        ("sysctl", (None, "net/ipv6/conf/fr-s/addr_gen_mode")),
        ("addr", (None, "fr-s", "fe80::1/64")),
        ("route", (None, "fd00:77:0:6::/64")),
    ]
    link, _, on, gen, gw, route = host
    assert (
        link.text("set")
        == f"link set dev fr-s group 4151 alias fireroute:{TAG}:s addrgenmode none up"
    )
    assert (on.value, gen.value) == ("0", "1")
    assert gw.text("create") == "address add fe80::1/64 dev fr-s nodad"
    assert route.text("create") == "route add fd00:77:0:6::/64 dev fr-s"
    # the control: a v4-only attachment's host end has IPv6 off and no addrgenmode
    plain = [o for o in cni.cni(pool()) if o.ns is None]
    assert [(o.kind, o.value) for o in plain if isinstance(o, Sysctl)] == [("sysctl", "1")]
    assert "addrgenmode" not in plain[0].text("set")
    assert cni.host_veth(v) == cni.host_veth(pool()).__class__(**_same(cni.host_veth(v)))


def _same(link: Link) -> dict:
    """A link's constructor arguments without ``addrgen`` (which is printed, not compared)."""
    names = ("name", "link_kind", "owner", "vm", "alias", "ns", "uid", "gid", "master", "group")
    names += ("up", "peer", "made", "mac", "mtu", "peer_mac")
    return {n: getattr(link, n) for n in names}


def test_the_in_process_executor_sends_the_addrgenmode_with_the_line():
    """Without it the kernel would make the host end's link-local address once it is up: the
    in-process line carries ``addrgenmode none`` (tests/kernel/test_inproc6.py compares the
    kernel's result with ``ip``'s); a v4-only attachment's line carries none; another mode
    is left to ``ip``."""
    from fireroute.kernel.inproc import encode
    from fireroute.plan.ops import Act, OpStep
    from fireroute.plan.steps import IP

    def step(link: Link) -> OpStep:
        return OpStep(IP, link.text("set"), "bring up", link.vm, ops=[Act("set", link)])

    class Nl:
        def set_link(self, *args) -> None:
            self.no_addrgen = args[-1]

    def sent(link: Link) -> bool:
        call, nl = encode(step(link)), Nl()
        assert call is not None
        with mock.patch("fireroute.kernel.rtnl.ifindex", lambda name: 7):
            call(nl)  # type: ignore[arg-type]
        return nl.no_addrgen

    assert sent(cni.host_veth(six())) is True
    assert sent(cni.host_veth(pool())) is False
    other = cni.host_veth(six())
    other.addrgen = "eui64"
    assert encode(step(other)) is None
