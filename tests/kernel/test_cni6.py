"""IPv6 through the CNI door (issue 24 step 13, docs/cni.md), against the kernel, called as a
runtime calls the plugin (tests/cni/runtime.py): a dual-stack attachment's guest, wired to the
tap in the runtime's namespace (tests/kernel/tapwire.py: a process holds the tap open as the VMM
does), reaches the internet over IPv6 masqueraded out of the uplink (NAT66), and over IPv6
reaches neither another guest, nor the host, nor the metadata address, each refusal beside the
control that the same path works when allowed. CHECK and ``fireroute check`` are clean after ADD
and name a v6 object removed; DEL leaves nothing (no ip6 table once the last attachment with
IPv6 goes, IPv6 forwarding back). Every link fireroute makes in the namespace has IPv6 off (no
link-local address appears on it), beside a link the test makes there that gets one. An
unmodified guest configures itself from ``fireroute ra`` (beside the control without it). A
port mapping is reached over IPv6 at the host's uplink address (test_cni6_ports)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from ipaddress import IPv4Interface, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from tests.cni.runtime import Runtime, leftovers, state_vms
from tests.conftest import Host, sh
from tests.kernel.tapwire import Wired
from tests.kernel.test_isolation import ride
from tests.kernel.test_isolation6 import INTERNET6, METADATA6, PING6, UPLINK6
from tests.kernel.test_ra import Lab, eui64, wait_for

pytestmark = pytest.mark.privileged

HOST_LOCAL = "/usr/lib/cni/host-local"


class CniLab(Lab):
    """test_isolation6's lab (the uplink and the internet speak IPv6; test_ra's, which can run
    ``fireroute ra``) with guests on CNI attachments instead of NAT taps."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.rt = Runtime(host)
        self.wires: list[Wired] = []

    def attach(self, name: str, static6: bool = True, **conf: object) -> tuple[str, dict, str]:
        """ADD (with IPv6 unless ``ipv6=False``) for container ``ctr-NAME`` in a namespace
        of its own; a guest wired to the result's tap, configured from the result as a
        runtime's guest would be (IPv4 from the VM's interface, IPv6 from the veth's entry,
        unless not ``static6``: then it has none but its own link-local address).
        (guest namespace, result, container namespace)."""
        conf.setdefault("ipv6", True)
        netns = self.rt.netns(name)
        res = self.rt.add(f"ctr-{name}", netns, conf=self.rt.config(**conf))
        ifs = res["interfaces"]
        (four,) = [i for i in res["ips"] if ifs[i["interface"]].get("sandbox") == f"ctr-{name}"]
        vm_if = ifs[four["interface"]]
        wired = Wired(netns.rsplit("/", 1)[1])
        self.wires.append(wired)
        ns = wired.guest(vm_if["name"], vm_if["mac"])
        sh("ip", "-n", ns, "addr", "add", four["address"], "dev", "eth0")
        sh("ip", "-n", ns, "route", "add", "default", "via", four["gateway"])
        for six in (i for i in res["ips"] if ":" in i["address"] and static6):
            sh("ip", "-n", ns, "-6", "addr", "add", six["address"], "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "-6", "route", "add", "default", "via", six["gateway"],
               "dev", "eth0")  # fmt: skip
        return ns, res, netns

    def close(self) -> None:
        super().close()
        for w in self.wires:
            w.close()
        self.rt.close()


@pytest.fixture
def lab(host: Host) -> Iterator[CniLab]:
    lab = CniLab(host)
    try:
        yield lab
    finally:
        lab.close()


def six_of(res: dict) -> dict:
    (six,) = [i for i in res["ips"] if ":" in i["address"]]
    return six


def inet6(netns: str, dev: str) -> list[str]:
    out = sh("nsenter", f"--net={netns}", "ip", "-j", "-6", "addr", "show", "dev", dev).stdout
    return [f"{a['local']}/{a['prefixlen']}" for d in json.loads(out) for a in d["addr_info"]]


def test_a_dual_stack_guest_reaches_the_internet_through_nat66(lab: CniLab):
    ns, res, netns = lab.attach("a")
    six = six_of(res)
    ifs = res["interfaces"]
    assert ifs[six["interface"]] == {**ifs[six["interface"]], "name": "veth0", "sandbox": netns}
    assert six["gateway"] == "fe80::1" and six["address"].endswith("::2/64")
    lab.serve(lab.host.inet, f"[{INTERNET6}]:8080", "203.0.113.1:8080")
    assert lab.connect(ns, INTERNET6, 8080) == f"hello {UPLINK6}"  # masqueraded
    assert lab.connect(ns, "203.0.113.1", 8080) == "hello 203.0.113.2"  # IPv4 as before
    # with the guest's carrier on the tap: CHECK and fireroute check have nothing to say
    check = lab.rt.call("CHECK", container="ctr-a", netns=netns, conf=lab.rt.config(ipv6=True))
    assert check.rc == 0, check.doc
    assert lab.host.fireroute("check").returncode == 0
    # the host end holds fe80::1 alone (no link-local of the kernel's), the route to the /64
    host_dev = ifs[0]["name"]
    assert lab.addrs6(host_dev) == ["fe80::1/64"]
    block = six["address"].replace("::2/64", "::/64")
    routes = lab.host.run("ip", "-6", "-j", "route", "show", "dev", host_dev).stdout
    assert block in {r["dst"] for r in json.loads(routes)}


def test_no_link_in_the_namespace_has_ipv6(lab: CniLab):
    """Neither a v4-only attachment's nor a dual-stack one's veth and tap get an IPv6 address
    (their guest wired, so the tap has carrier); the control: a veth pair the test makes in the
    same namespace gets its link-local address."""
    _, four, netns4 = lab.attach("v4", ipv6=False)
    _, dual, netns6 = lab.attach("v6")
    assert not [i for i in four["ips"] if ":" in i["address"]]
    for netns, res in ((netns4, four), (netns6, dual)):
        names = [i["name"] for i in res["interfaces"] if i.get("sandbox") == netns]
        assert names == ["veth0", res["interfaces"][2]["name"]]
        for dev in names:
            assert inet6(netns, dev) == [], (netns, dev)
            flag = sh("nsenter", f"--net={netns}", "sysctl", "-n",
                      f"net.ipv6.conf.{dev}.disable_ipv6").stdout.strip()  # fmt: skip
            assert flag == "1", (netns, dev)
    # the control: the kernel gives a link of the same namespace a link-local address
    sh("nsenter", f"--net={netns4}", "ip", "link", "add", "t0", "type", "veth", "peer", "t1")
    sh("nsenter", f"--net={netns4}", "ip", "link", "set", "t0", "up")
    sh("nsenter", f"--net={netns4}", "ip", "link", "set", "t1", "up")
    lab.host.run("sleep", "0.2")
    assert [a for a in inet6(netns4, "t0") if a.startswith("fe80:")], inet6(netns4, "t0")
    # and the v4-only attachment's host end keeps IPv6 off
    flag = lab.host.run("cat", f"/proc/sys/net/ipv6/conf/{four['interfaces'][0]['name']}/"
                        "disable_ipv6").stdout.strip()  # fmt: skip
    assert flag == "1"


def test_no_guest_reaches_another_over_v6_unless_both_allow_peers(lab: CniLab):
    a, _, _ = lab.attach("a")
    b, rb, _ = lab.attach("b")
    lab.serve(b, "[::]:7000")
    target = six_of(rb)["address"].split("/")[0]
    assert lab.connect(a, target, 7000).startswith("FAIL")
    # the control: two attachments that both allow peers reach each other
    c, _, _ = lab.attach("c", allowPeers=True)
    d, rd, _ = lab.attach("d", allowPeers=True)
    lab.serve(d, "[::]:7000")
    assert lab.connect(c, six_of(rd)["address"].split("/")[0], 7000).startswith("hello ")


def test_the_host_and_the_metadata_address_are_closed_over_v6_but_what_is_allowed(lab: CniLab):
    ns, _, _ = lab.attach("a")
    lab.serve(lab.host.ns, "[::]:2222", "[::]:2223")
    lab.serve(lab.host.inet, f"[{METADATA6}]:80")
    for target in ("fe80::1%eth0", UPLINK6):
        assert lab.connect(ns, target, 2222).startswith("FAIL"), target
    assert lab.connect(ns, METADATA6, 80).startswith("FAIL")
    # the controls: the gateway answers pings; an allowed host port and metadata are reached
    ping = sh("ip", "netns", "exec", ns, sys.executable, "-c", PING6, "fe80::1%eth0", check=False)
    assert ping.returncode == 0 and ping.stdout.startswith("echo reply from fe80::1"), ping
    ok, _, _ = lab.attach("b", allowHostPorts=["2223/tcp"], allowMetadata=True)
    assert lab.connect(ok, "fe80::1%eth0", 2223).startswith("hello fe80:")
    assert lab.connect(ok, "fe80::1%eth0", 2222).startswith("FAIL")
    assert lab.connect(ok, METADATA6, 80) == f"hello {UPLINK6}"


def test_check_names_a_v6_object_removed_and_restore_heals_it(lab: CniLab):
    _, res, netns = lab.attach("a")
    conf = lab.rt.config(ipv6=True)
    host_dev = res["interfaces"][0]["name"]
    lab.host.run("ip", "-6", "addr", "del", "fe80::1/64", "dev", host_dev)
    bad = lab.rt.call("CHECK", container="ctr-a", netns=netns, conf=conf)
    assert bad.rc != 0 and "fe80::1/64" in bad.doc["details"], bad.doc
    lab.host.fireroute("restore")
    assert lab.rt.call("CHECK", container="ctr-a", netns=netns, conf=conf).rc == 0
    # a namespace link's IPv6 switched on behind fireroute's back is named too
    sh("nsenter", f"--net={netns}", "sysctl", "-qw", "net.ipv6.conf.veth0.disable_ipv6=0")
    bad = lab.rt.call("CHECK", container="ctr-a", netns=netns, conf=conf)
    assert bad.rc != 0 and "veth0" in bad.doc["details"], bad.doc
    lab.host.fireroute("restore")
    assert lab.rt.call("CHECK", container="ctr-a", netns=netns, conf=conf).rc == 0
    assert inet6(netns, "veth0") == []
    # the veth gone (both ends): restore makes the attachment again, the host end as at ADD
    lab.host.run("ip", "link", "del", host_dev)
    assert lab.rt.call("CHECK", container="ctr-a", netns=netns, conf=conf).rc != 0
    lab.host.fireroute("restore")
    assert lab.rt.call("CHECK", container="ctr-a", netns=netns, conf=conf).rc == 0
    assert lab.addrs6(host_dev) == ["fe80::1/64"] and inet6(netns, "veth0") == []


def ip6_tables(h: Host) -> list[str]:
    return [t["table"]["name"] for t in h.nft() if "table" in t and t["table"]["family"] == "ip6"]


def test_del_leaves_nothing_and_the_ip6_table_goes_with_the_last_v6_attachment(lab: CniLab):
    h = lab.host
    before = h.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip()
    _, _, n4 = lab.attach("v4", ipv6=False)
    assert ip6_tables(h) == []  # a v4-only attachment makes no ip6 table
    _, _, na = lab.attach("a")
    _, _, nb = lab.attach("b")
    assert ip6_tables(h) == ["firecracker"]
    conf = lab.rt.config(ipv6=True)
    assert lab.rt.call("DEL", container="ctr-a", netns=na, conf=conf).rc == 0
    assert ip6_tables(h) == ["firecracker"]  # b still has IPv6
    assert lab.rt.call("DEL", container="ctr-b", netns=nb, conf=conf).rc == 0
    assert ip6_tables(h) == []
    assert h.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == before
    assert lab.rt.call("DEL", container="ctr-b", netns=nb, conf=conf).rc == 0  # idempotent
    v4 = lab.rt.config(ipv6=False)
    assert lab.rt.call("DEL", container="ctr-v4", netns=n4, conf=v4).rc == 0
    assert leftovers(h) == [] and state_vms(h.state) == [] and "ip6" not in h.nft_text()


def test_an_iptables_attachment_sends_only_as_its_guest(lab: CniLab):
    """The iptables backend's attachments (IPv4 only, as that backend has no IPv6 rules): a
    guest reaches the internet masqueraded; raw UDP from another attachment's guest with its
    address, on its established flow, is dropped at the host end of that veth (raw
    PREROUTING, before conntrack), while the guest's own packets arrive (the control)."""
    ns_a, res_a, _ = lab.attach("a", ipv6=False, backend="iptables")
    ns_b, res_b, _ = lab.attach("b", ipv6=False, backend="iptables")
    for dev in ("all", "default", res_b["interfaces"][0]["name"]):  # ours must drop, not rp_filter
        lab.host.run("sysctl", "-qw", f"net/ipv4/conf/{dev}/rp_filter=0")
    lab.serve(lab.host.inet, "203.0.113.1:8080")
    assert lab.connect(ns_a, "203.0.113.1", 8080) == "hello 203.0.113.2"
    guest_a = str(IPv4Interface(next(i["address"] for i in res_a["ips"] if "." in i["address"])).ip)
    seen = ride(lab.host, (ns_a, guest_a), (ns_b, guest_a))  # b, as a, on a's flow
    assert seen == ["again@203.0.113.2", "own@203.0.113.2"], seen


def test_ipv6_refusals_are_one_line_and_change_nothing(lab: CniLab, tmp_path: Path):
    netns = lab.rt.netns("x")
    iptables = lab.rt.call("ADD", container="ctr-x", netns=netns,
                           conf=lab.rt.config(ipv6=True, backend="iptables"))  # fmt: skip
    assert iptables.rc != 0 and iptables.doc["code"] == 7, iptables.doc
    assert '"ipv6" needs the nft backend' in iptables.doc["details"], iptables.doc
    # port mappings are published over IPv6 too (their packets: test_cni6_ports below): the
    # same path is taken, and DEL takes it back
    mapping = {"portMappings": [{"hostPort": 8080, "containerPort": 80}]}
    conf = lab.rt.config(ipv6=True, runtimeConfig=mapping, capabilities={"portMappings": True})
    ports = lab.rt.call("ADD", container="ctr-x", netns=netns, conf=conf)
    assert ports.rc == 0, ports.doc
    assert "8080" in lab.host.run("nft", "list", "table", "ip6", "firecracker").stdout
    assert lab.rt.call("DEL", container="ctr-x", netns=netns, conf=conf).rc == 0
    # an IPAM plugin that gives an IPv6 address: refused, its lease released
    data = tmp_path / "ipam"
    ranges = [[{"subnet": "10.78.0.0/24"}], [{"subnet": "fd00:78::/64"}]]
    ipam = {"type": "host-local", "ranges": ranges, "dataDir": str(data)}
    dual = lab.rt.call("ADD", container="ctr-x", netns=netns, conf=lab.rt.config(ipam=ipam))
    assert dual.rc != 0 and dual.doc["code"] == 7, dual.doc
    assert "IPv6 address (fd00:78::" in dual.doc["details"], dual.doc
    leased = [p.name for p in (data / "fcnet").iterdir() if p.name[0].isdigit()]
    assert leased == []
    assert state_vms(lab.host.state) == [] and leftovers(lab.host) == []
    assert set(lab.rt.ns_links(netns)) == {"lo"}
    # the control: IPv4 from host-local, IPv6 from fireroute's pool, in one attachment
    ipam4 = {**ipam, "ranges": ranges[:1]}
    ns, res, _ = lab.attach("y", ipam=ipam4)
    four = {i["address"] for i in res["ips"] if ":" not in i["address"]}
    assert len(four) == 1 and four.pop().startswith("10.78.0.")  # (host-local's, both entries)
    assert six_of(res)["address"].endswith("::2/64")
    lab.serve(lab.host.inet, f"[{INTERNET6}]:8080")
    assert lab.connect(ns, INTERNET6, 8080) == f"hello {UPLINK6}"


def test_cni6_ports(lab: CniLab):
    """A dual-stack attachment's port mappings are published over IPv6 too: from the internet
    namespace its ``hostPort`` at the host's uplink IPv6 address reaches the guest's
    ``containerPort`` (and over IPv4, the control), a mapping with an IPv6 ``hostIP`` there
    only, an unmapped port nowhere; after DEL the port is not reached and nothing is left."""
    h = lab.host
    maps = [
        {"hostPort": 8080, "containerPort": 80},
        {"HostPort": 8443, "ContainerPort": 443, "HostIP": UPLINK6},  # (containerd's spelling)
    ]
    conf = {"ipv6": True, "runtimeConfig": {"portMappings": maps},
            "capabilities": {"portMappings": True}}  # fmt: skip
    ns, _, netns = lab.attach("web", **conf)
    lab.serve(ns, "[::]:80", "[::]:443", "[::]:81")  # (both families: IPv4's as ::ffff:)
    assert lab.connect(h.inet, UPLINK6, 8080) == f"hello {INTERNET6}"  # the client's address
    assert lab.connect(h.inet, "203.0.113.2", 8080) == "hello ::ffff:203.0.113.1"  # IPv4 too
    assert lab.connect(h.inet, UPLINK6, 8443) == f"hello {INTERNET6}"  # on its address
    # the controls: the address-bound port on the host's IPv4 address, unmapped ports
    assert lab.connect(h.inet, "203.0.113.2", 8443).startswith("FAIL")
    assert lab.connect(h.inet, UPLINK6, 81).startswith("FAIL")
    assert lab.connect(h.inet, UPLINK6, 8081).startswith("FAIL")
    # a mapping on [::1] is refused in one line (code 7), nothing changed
    loop = {"hostPort": 9090, "containerPort": 80, "hostIP": "::1"}
    bad = lab.rt.config(**{**conf, "runtimeConfig": {"portMappings": [loop]}})
    netns_x = lab.rt.netns("x")
    refused = lab.rt.call("ADD", container="ctr-x", netns=netns_x, conf=bad)
    assert refused.rc != 0 and refused.doc["code"] == 7, refused.doc
    assert "a port on [::1] cannot be forwarded" in refused.doc["details"], refused.doc
    assert "\n" not in refused.doc["details"] and set(lab.rt.ns_links(netns_x)) == {"lo"}
    assert len(state_vms(h.state)) == 1
    check = lab.rt.call("CHECK", container="ctr-web", netns=netns, conf=lab.rt.config(**conf))
    assert check.rc == 0, check.doc
    assert lab.rt.call("DEL", container="ctr-web", netns=netns, conf=lab.rt.config(**conf)).rc == 0
    assert lab.connect(h.inet, UPLINK6, 8080).startswith("FAIL")
    assert lab.connect(h.inet, "203.0.113.2", 8080).startswith("FAIL")
    assert leftovers(h) == [] and state_vms(h.state) == [] and ip6_tables(h) == []
    assert "8080" not in h.nft_text()


def test_an_unmodified_guest_configures_itself_from_fireroutes_ra(lab: CniLab):
    """``fireroute ra`` answers a CNI guest's solicitation as a NAT guest's: the guest (no
    address given) takes its SLAAC address in the attachment's /64 and ``default via fe80::1``,
    and reaches the internet over it; the control: without the responder it gets nothing."""
    ns, res, _ = lab.attach("a", static6=False)
    block = str(IPv6Network(six_of(res)["address"], strict=False))
    lab.solicit(ns)
    assert wait_for(lambda: lab.slaac(ns), 3.0) == []  # the control: nobody answers
    lab.start_responder()
    want = eui64(block, res["interfaces"][3]["mac"])  # (the VM's interface: the guest's MAC)
    lab.solicit(ns)
    got = wait_for(lambda: lab.slaac(ns), 5.0)
    assert [(IPv6Address(a["local"]), a["prefixlen"]) for a in got] == [(want, 64)]
    routes = wait_for(lambda: lab.ra_routes(ns), 2.0)
    assert [(r["gateway"], r["dev"]) for r in routes] == [("fe80::1", "eth0")]
    lab.serve(lab.host.inet, f"[{INTERNET6}]:8080")
    assert lab.connect(ns, INTERNET6, 8080, str(want)) == f"hello {UPLINK6}"
    code, out, err = lab.stop_responder()
    assert (code, err) == (0, ""), err
    assert res["interfaces"][0]["name"] in out, out  # advertised on the veth's host end


def test_gc_and_teardown_take_the_v6_objects_of_attachments(lab: CniLab):
    """An attachment with IPv6 whose namespace went (a DEL that never came): ``fireroute gc``
    takes it down, its host end, route and elements with it, while another stays (the ip6 table
    too); ``teardown`` then takes the rest, the ip6 table and IPv6 forwarding included."""
    h = lab.host
    before = h.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip()
    _, gone_res, gone = lab.attach("a")
    _, kept_res, _ = lab.attach("b")
    gone_dev, gone_block = gone_res["interfaces"][0]["name"], six_of(gone_res)["address"]
    lab.wires[0].close()  # (its VMM gone: nothing holds the namespace any more)
    lab.rt.drop_netns(gone)
    h.fireroute("gc")
    (left,) = state_vms(h.state)
    assert left.startswith("cni-ctr-b-")
    assert gone_dev not in h.links()
    routes6 = h.run("ip", "-6", "route", "show").stdout
    block = str(IPv6Network(gone_block, strict=False))
    assert f"{block} dev" not in routes6 and gone_dev not in routes6, routes6
    assert not any(gone_dev in str(e) for e in h.set_elements("firecracker", "taps"))
    assert ip6_tables(h) == ["firecracker"]  # the other attachment keeps it
    assert h.fireroute("check").returncode == 0
    h.fireroute("teardown")
    assert state_vms(h.state) == [] and leftovers(h) == [] and ip6_tables(h) == []
    assert kept_res["interfaces"][0]["name"] not in h.links()
    assert h.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == before
