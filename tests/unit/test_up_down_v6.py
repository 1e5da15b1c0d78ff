"""NAT VMs with IPv6 up and down through the manager on the fake kernel (issue 24 step 5):
the plans as golden files (the first v6 VM of a table, a second, a v4 VM beside; a v6 VM
down while another stays, the last one down), and what the fake holds after each: the ip6
table and IPv6 forwarding come with the first v6 VM and go with the last, a v4-only host
never has them, and up then down leaves the host as it was."""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest

from fireroute import manager
from fireroute.kernel import forwarding, observe, scope
from fireroute.kernel.fake import Fake
from fireroute.model import Options
from fireroute.plan.steps import as_commands
from fireroute.want.objects import FORWARD6_KEY, Link
from tests.unit.test_down import Applier
from tests.unit.test_plan import golden
from tests.unit.test_up_decisions import Apply, UpHost

POOL6 = "fd3c:9a1e:52b0::/48"
TABLE6 = ("nft table", (None, "ip6", "firecracker"))
TABLE = ("nft table", (None, "ip", "firecracker"))
V6 = dict(ipv6=True, pool6=IPv6Network(POOL6))


class Executor(Apply, Applier):
    """up's all or nothing, down's best effort, over the fake."""


def sysctl(fake: Fake, key: str) -> str:
    """A sysctl as the fake holds it: both forwardings, a device's (else its default)."""
    if key == FORWARD6_KEY:
        return fake.forwarding6
    if "/" not in key:
        return fake.forwarding
    found = fake.objs.get(("sysctl", (None, key)))
    return found.value if found is not None else "0"  # type: ignore[attr-defined]


def held(fake: Fake) -> tuple:
    """What the fake holds: its objects (by key) and both forwardings."""
    return (sorted(map(repr, fake.objs)), fake.forwarding, fake.forwarding6)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A manager over a fresh state file (of a known id) and a fake host with an uplink, up's
    and down's reads answered from the fake (both forwardings as it holds them)."""
    monkeypatch.setattr(observe, "require_net_admin", lambda action: None)
    monkeypatch.setattr(scope, "which", lambda tool: f"/usr/sbin/{tool}")
    monkeypatch.setattr(forwarding, "recorded", lambda *name: None)
    monkeypatch.setattr(forwarding, "record", lambda *value: False)
    monkeypatch.setattr(forwarding, "forget", lambda *name: None)

    def make(
        name: str = "s", fake: Fake | None = None, instance: str = "5ca1ab1e"
    ) -> tuple[manager.Manager, Fake]:
        if fake is None:
            fake = Fake()
            fake.seed(Link("eth0", "", "", None, "", group=None))
            fake.seed_route("0.0.0.0/0", "eth0")
        monkeypatch.setattr(scope, "read_sysctl", lambda key: sysctl(fake, key))
        m = manager.Manager(tmp_path / f"{name}.db", runner=UpHost(fake))
        m.executor = lambda: Executor(fake)  # type: ignore[assignment,return-value]
        m._store().reserve([], {"instance": instance})
        return m, fake

    return make


def _scenario(host) -> tuple[str, str]:
    """The plans, printed: the first v6 VM of a table, a second, a v4 VM beside; a v6 VM
    down while another stays, the last v6 VM down (the v4 one stays)."""
    m, fake = host()
    ups = []
    for title, name, options in [
        ("the first v6 VM of the table", "a", V6),
        ("a second v6 VM", "b", V6),
        ("a v4 VM beside", "c", {}),
    ]:
        res = m.up([name], Options(**options))
        ups.append(f"## {title}: {name}\n{as_commands(res.plan)}")
    downs = []
    for title, name in [("a v6 VM, another stays", "b"), ("the last v6 VM", "a")]:
        _, plan = m.down([name])
        downs.append(f"## {title}: {name}\n{as_commands(plan)}")
    return "".join(ups), "".join(downs)


def test_up_of_v6_vms_golden(host):
    golden("up-nft-ipv6.txt", _scenario(host)[0])


def test_down_of_v6_vms_golden(host):
    golden("down-nft-ipv6.txt", _scenario(host)[1])


def test_the_ip6_table_and_forwarding_go_only_with_the_last_v6_vm(host):
    m, fake = host()
    before = held(fake)
    m.up(["a", "b"], Options(**V6))
    m.up(["c"], Options())
    assert TABLE6 in fake.objs and fake.forwarding6 == "1" and fake.forwarding == "1"
    v6 = [o for o in fake.objs.values() if o.kind == "addr" and ":" in o.cidr]
    assert sorted(o.dev for o in v6) == ["fr-a", "fr-b"]  # (fe80::1 on each v6 tap)
    m.down(["a"])
    assert TABLE6 in fake.objs and fake.forwarding6 == "1"  # b has IPv6 still
    assert ("link", (None, "fr-a")) not in fake.objs
    assert not [o for o in fake.objs.values() if getattr(o, "dev", None) == "fr-a"]
    m.down(["b"])
    assert TABLE6 not in fake.objs and fake.forwarding6 == "0"  # the last v6 VM
    assert TABLE in fake.objs and fake.forwarding == "1"  # c stays, with IPv4's
    m.down(["c"])
    assert held(fake) == before  # as it was


def test_ipv6_forwarding_stays_while_another_files_vm_has_ipv6(host):
    """Another state file's v4-only VM (its tap with IPv6 off) does not keep IPv6 forwarding
    on; its VM with IPv6 does."""
    m, fake = host("one")
    other, _ = host("two", fake, "0dd1d0e5")
    m.up(["a"], Options(**V6))
    other.up(["x"], Options(table="t2"), skip_conflicts=True)
    m.down(["a"])
    assert fake.forwarding6 == "0" and fake.forwarding == "1"  # (x has IPv4's)
    assert TABLE6 not in fake.objs
    m.up(["a"], Options(**V6))
    other.up(
        ["y"],
        Options(table="t2", ipv6=True, pool6=IPv6Network("fd3c:9a1e:52b1::/48")),
        skip_conflicts=True,
    )
    m.down(["a"])
    assert fake.forwarding6 == "1"  # y needs it


def test_a_v4_only_host_never_gets_the_ip6_table(host):
    m, fake = host()
    before = held(fake)
    res = m.up(["a"], Options())
    text = as_commands(res.plan)
    assert "ip6" not in text and FORWARD6_KEY not in text and TABLE6 not in fake.objs
    assert fake.forwarding6 == "0"
    _, plan = m.down(["a"])
    assert "ip6" not in as_commands(plan)
    assert held(fake) == before
    # the control: a v6 VM on the same host does get them
    m.up(["b"], Options(**V6))
    assert TABLE6 in fake.objs and fake.forwarding6 == "1"


def test_a_v6_vm_joins_a_v4_table_with_a_new_ip6_table(host):
    """The ip table is there (a v4 VM's), the ip6 one is not: only the ip6 table is made
    exclusively, in the same nft process as the ip table's elements; undone, it is deleted."""
    m, fake = host()
    m.up(["a"], Options())
    res = m.up(["b"], Options(**V6))
    nft = [s for s in res.plan.steps if s.tool == "nft"]
    assert [s.exclusive for s in nft] == [False, True]
    assert "create table ip6 firecracker" in nft[1].text and "create table" not in nft[0].text
    assert [u.text for u in nft[1].undo] == [
        "add table ip6 firecracker\ndelete table ip6 firecracker\n"
    ]
    i = res.plan.steps.index(nft[0])
    assert res.plan.steps[i + 1] is nft[1]  # (consecutive: one nft -f, one transaction)


def test_the_v6_address_is_refused_before_its_sysctls(host):
    """F11 on the fake: an IPv6 address on a device with IPv6 off is refused; up writes the
    tap's sysctls first, so it is taken (the control)."""
    from fireroute.kernel.kinds import OTHER
    from fireroute.want.objects import Addr, Sysctl

    fake = Fake()
    tap = Link("fr-x", "tun", "o", "x", "")
    fake.do("create", tap)
    fake.do("create", Sysctl("net/ipv6/conf/fr-x/disable_ipv6", "1", "", "o", "x"))
    ll = Addr(tap, "fe80::1/64", nodad=True)
    assert fake.apply([_Op("create", ll)]) == [OTHER]
    fake.do("set", Sysctl("net/ipv6/conf/fr-x/disable_ipv6", "0", "", "o", "x"))
    assert fake.apply([_Op("create", ll)]) == ["ok"]


@pytest.mark.parametrize("default", ["0", "1"])
def test_a_new_tap_starts_with_ipv6_as_the_namespace_default_says(host, default):
    """A tap up makes has from birth what its namespace's default says (``disable_ipv6``),
    and no address generation from the line that brings it up (``addrgenmode none``): up
    writes only what differs. Default on: a v6 tap's sysctls are not written, a v4 tap's
    ``disable_ipv6=1`` is; default off (a hardened host): the v6 tap's ``disable_ipv6=0`` is
    written, before its address (F11), and the v4 tap's is not."""
    from fireroute.want.objects import Sysctl

    m, fake = host()
    fake.seed(Sysctl("net/ipv6/conf/default/disable_ipv6", default, "", "", None))
    texts = [s.text for s in m.up(["a"], Options(**V6)).plan.steps]
    texts += [s.text for s in m.up(["b"], Options()).plan.steps]
    assert "link set dev fr-a group 4151 alias fireroute:5ca1ab1e:a addrgenmode none up" in texts
    assert not [t for t in texts if t.endswith("/addr_gen_mode=1")]
    enable, disable = "net/ipv6/conf/fr-a/disable_ipv6=0", "net/ipv6/conf/fr-b/disable_ipv6=1"
    if default == "0":
        assert enable not in texts and disable in texts
    else:
        gateway = "address add fe80::1:9a1e:52b0:0/64 dev fr-a nodad"
        assert texts.index(enable) < texts.index(gateway) and disable not in texts


class _Op:
    def __init__(self, verb: str, obj: object) -> None:
        self.verb, self.obj = verb, obj


def test_each_v6_step_of_an_up_has_its_undo(host):
    """The tap's IPv6 address and route are undone by their deletes, IPv6 forwarding by its
    value before (a failed up leaves none of them)."""
    m, _ = host()
    steps = m.up(["a"], Options(**V6)).plan.steps
    undo = {s.text: [u.text for u in s.undo] for s in steps}
    gw = "fe80::1:9a1e:52b0:0/64"  # its own gateway (the pool's first block)
    assert undo[f"address add {gw} dev fr-a nodad"] == [f"address del {gw} dev fr-a"]
    assert undo["route add fd3c:9a1e:52b0::/64 dev fr-a"] == [
        "route del fd3c:9a1e:52b0::/64 dev fr-a"
    ]
    assert undo["net.ipv6.conf.all.forwarding=1"] == ["net.ipv6.conf.all.forwarding=0"]
    assert undo["net.ipv4.ip_forward=1"] == ["net.ipv4.ip_forward=0"]  # (the control)


def test_up_policy_publish_and_down_of_a_v6_vm_with_policy_and_ports_golden(host, monkeypatch):
    """A v6 VM with an egress policy of both families and published ports (issue 24 step 11):
    its up (the ip6 table with the lazy parts its elements need), a policy change and a port
    published while it runs (the ip6 table's elements in the same nft process as the ip
    table's), its down."""
    from fireroute import change
    from fireroute.model import Published, merged
    from fireroute.plan.steps import Plan

    monkeypatch.setattr(change, "which", lambda tool: f"/usr/sbin/{tool}")
    m, fake = host()
    ports = [
        Published.parse(p) for p in ("8080:80", "127.0.0.1:2222:22", "[2001:db8::7]:53:53/udp")
    ]
    deny = merged(["10.0.0.0/8", "2000::/16"])
    old = Options(**V6, deny_out=deny, allow_out=merged(["2000:1::/32"]), publish=ports)
    res = m.up(["a"], old)
    out = [f"## up: a\n{as_commands(res.plan)}"]
    vm = m.show("a")
    new = change.changed(vm, Options(**V6, egress="none", publish=ports))
    out.append(
        f"## policy: --egress none\n{as_commands(Plan(change.plan_change(vm, new, change.POLICY)))}"
    )
    more = change.changed(vm, Options(**V6, deny_out=deny, allow_out=merged(["2000:1::/32"]),
                                      publish=[*ports, Published.parse("9090:90")]))  # fmt: skip
    out.append(
        f"## publish: 9090:90\n{as_commands(Plan(change.plan_change(vm, more, change.PORTS)))}"
    )
    _, plan = m.down(["a"])
    out.append(f"## down: a\n{as_commands(plan)}")
    golden("up-nft-ipv6-policy.txt", "".join(out))
    assert TABLE6 not in fake.objs
