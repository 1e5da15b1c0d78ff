"""The CNI plugin against the kernel, called as a runtime calls it (tests/cni/runtime.py), in
throwaway namespaces: ADD's result in every version, what ADD makes on both sides, CHECK that
fails when any part is broken (beside a CHECK that passes), DEL that finishes and is
idempotent, GC per the spec, STATUS, the spec's error codes with nothing changed, and 32
attachments added and deleted at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.cni.runtime import Runtime, leftovers, state_vms
from tests.conftest import make_host, needs_root, sh
from tests.unit.test_cni_fuzz import stdin_texts, well_formed

pytestmark = needs_root


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    for h in make_host(tmp_path, "cni"):
        r = Runtime(h)
        try:
            yield r
        finally:
            r.close()


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_result_has_the_shape_the_go_sdk_reads(rt: Runtime, version: str):
    ns = rt.netns("c1")
    res = rt.add("c1abc", ns, conf=rt.config(cniVersion=version))
    assert res["cniVersion"] == version
    ifs = res["interfaces"]
    # the go SDK: exactly one IP on the VM interface (sandbox = the container id)
    (ip,) = [i for i in res["ips"] if ifs[i["interface"]]["sandbox"] == "c1abc"]
    vm_if = ifs[ip["interface"]]
    # portmap, bandwidth, firewall: the container's address on CNI_IFNAME in the namespace
    (on_veth,) = [i for i in res["ips"] if ifs[i["interface"]] != vm_if]
    assert ifs[on_veth["interface"]]["name"] == "veth0"
    assert ifs[on_veth["interface"]]["sandbox"] == ns
    assert on_veth["address"] == ip["address"] and len(res["ips"]) == 2
    guest = ip["address"].split("/")[0]
    assert vm_if["mac"] == "06:00:" + ":".join(f"{int(b):02x}" for b in guest.split("."))
    # the tap: same name as the VM interface, sandbox the namespace path, and it exists there
    tap = [i for i in ifs if i["name"] == vm_if["name"] and i.get("sandbox") == ns]
    assert len(tap) == 1 and vm_if["name"] in rt.ns_links(ns)
    inside = rt.ns_links(ns)
    assert [i["name"] for i in ifs if i.get("sandbox") == ns] == ["veth0", vm_if["name"]]
    for i in ifs:  # every MAC the result names is the kernel's
        if i.get("sandbox") == ns:
            assert i["mac"] == inside[i["name"]]["address"]
    host_if = [i for i in ifs if "sandbox" not in i]
    assert len(host_if) == 1
    assert host_if[0]["mac"] == rt.host.links()[host_if[0]["name"]]["address"]
    assert ip["gateway"] and res["routes"] == [{"dst": "0.0.0.0/0", "gw": ip["gateway"]}]
    assert all(("version" in i) == (version < "1.0.0") for i in res["ips"])


def test_add_makes_both_sides_and_del_removes_them(rt: Runtime):
    ns = rt.netns("c1")
    res = rt.add("c1abc", ns)
    host_dev = res["interfaces"][0]["name"]
    gateway = res["ips"][0]["gateway"]
    assert rt.host.addrs(host_dev) == [f"{gateway}/30"]
    inside = rt.ns_links(ns)
    assert inside["veth0"]["linkinfo"]["info_kind"] == "veth"
    assert inside["tap0"]["linkinfo"]["info_kind"] == "tun"
    assert "UP" in inside["veth0"]["flags"] and "UP" in inside["tap0"]["flags"]
    guest = res["ips"][0]["address"].split("/")[0]
    assert [host_dev, guest] in [e["concat"] for e in rt.host.set_elements("firecracker", "vms")]
    assert rt.call("CHECK", container="c1abc", netns=ns).rc == 0
    assert rt.host.fireroute("check").returncode == 0

    d = rt.call("DEL", container="c1abc", netns=ns)
    assert (d.rc, d.doc) == (0, {})
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []
    assert set(rt.ns_links(ns)) == {"lo"}
    again = rt.call("DEL", container="c1abc", netns=ns)  # idempotent
    assert (again.rc, again.doc) == (0, {})


def test_add_twice_is_the_same_attachment(rt: Runtime):
    ns = rt.netns("c1")
    first = rt.add("c1abc", ns)
    assert rt.add("c1abc", ns) == first
    assert len(state_vms(rt.host.state)) == 1


@pytest.mark.parametrize(
    "breakage,named",
    [
        ("tc filter del dev veth0 ingress", 'does not redirect to "tap0"'),
        ("ip link set dev tap0 down", '"tap0" is down'),
        ("ip link del dev tap0", '"tap0" is missing'),
    ],
)
def test_check_fails_when_the_namespace_side_is_broken(rt: Runtime, breakage: str, named: str):
    ns = rt.netns("c1")
    rt.add("c1abc", ns)
    assert rt.call("CHECK", container="c1abc", netns=ns).rc == 0  # positive control
    rt.in_ns(ns, *breakage.split())
    bad = rt.call("CHECK", container="c1abc", netns=ns)
    assert bad.rc != 0 and bad.doc["code"] >= 100 and named in bad.doc["details"], bad.doc
    assert rt.host.fireroute("check", check=False).returncode == 1
    rt.host.fireroute("restore")
    assert rt.call("CHECK", container="c1abc", netns=ns).rc == 0


def test_check_fails_when_the_host_side_is_broken(rt: Runtime):
    ns = rt.netns("c1")
    res = rt.add("c1abc", ns)
    guest = res["ips"][0]["address"].split("/")[0]
    host_dev = res["interfaces"][0]["name"]
    rt.host.run(
        "nft", "delete", "element", "ip", "firecracker", "vms", f'{{ "{host_dev}" . {guest} }}'
    )
    bad = rt.call("CHECK", container="c1abc", netns=ns)
    assert bad.rc != 0 and "vms" in bad.doc["details"], bad.doc


def test_del_succeeds_when_the_namespace_is_gone(rt: Runtime):
    ns = rt.netns("c1")
    rt.add("c1abc", ns)
    sh("ip", "netns", "del", ns.rsplit("/", 1)[1])
    d = rt.call("DEL", container="c1abc", netns=ns)
    assert d.rc == 0, d.doc
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []


def test_gc_of_the_cli_takes_down_attachments_whose_namespace_is_gone(rt: Runtime):
    gone, kept = rt.netns("c1"), rt.netns("c2")
    rt.add("c1abc", gone)
    rt.add("c2abc", kept)
    rt.drop_netns(gone)
    assert rt.host.fireroute("check", check=False).returncode == 1  # it says so first
    rt.host.fireroute("gc")
    (left,) = state_vms(rt.host.state)
    assert left.startswith("cni-c2abc-")
    assert rt.host.fireroute("check").returncode == 0


def test_gc_removes_only_this_networks_unlisted_attachments(rt: Runtime):
    a1, a2, b1 = rt.netns("a1"), rt.netns("a2"), rt.netns("b1")
    rt.add("a1", a1)
    rt.add("a2", a2)
    rt.add("b1", b1, conf=rt.config(name="other"))
    valid = [{"containerID": "a1", "ifname": "veth0"}]
    g = rt.call("GC", conf=rt.config(**{"cni.dev/valid-attachments": valid}), ifname="")
    assert g.rc == 0, g.doc
    names = state_vms(rt.host.state)
    assert len(names) == 2 and not any(n.startswith("cni-a2-") for n in names)
    assert set(rt.ns_links(a2)) == {"lo"}  # its veth and tap went
    assert "tap0" in rt.ns_links(a1) and "tap0" in rt.ns_links(b1)


def test_status_answers_whether_add_can_work(rt: Runtime):
    ok = rt.call("STATUS", ifname="")
    assert (ok.rc, ok.doc) == (0, {})
    rt.host.run("ip", "route", "del", "default")
    bad = rt.call("STATUS", ifname="")
    assert bad.rc != 0 and bad.doc["code"] == 50 and "default route" in bad.doc["details"]
    ns = rt.netns("c1")
    add = rt.call("ADD", container="c1abc", netns=ns)
    assert (
        add.rc != 0 and "default route" in add.doc["details"] and '"uplink"' in add.doc["details"]
    )
    assert state_vms(rt.host.state) == [] and set(rt.ns_links(ns)) == {"lo"}


@pytest.mark.parametrize(
    "conf,env,code",
    [
        ({"blockSize": 31}, {}, 7),
        ({"pool": "not-a-pool"}, {}, 7),
        ({"tapName": "veth0"}, {}, 7),
        ({"mtu": 10}, {}, 7),
        ({"frobnicate": 1}, {}, 2),
        ({"cniVersion": "0.1.0"}, {}, 1),
        ({}, {"CNI_NETNS": "relative/path"}, 4),
        ({}, {"CNI_CONTAINERID": "-x"}, 4),
        # every field read is type-checked (issue 21, item 10)
        ({"blockSize": "/30"}, {}, 7),
        ({"allowPeers": "true"}, {}, 7),
        ({"prevResult": {"ips": [{"address": 5}]}}, {}, 7),
        (
            {
                "runtimeConfig": {
                    "portMappings": [
                        {"hostPort": 8080, "containerPort": 80, "hostIP": "127.0.0.1:5"}
                    ]
                }
            },
            {},
            7,
        ),  # fmt: skip
        ({"allowHostPorts": {"53": "udp"}}, {}, 7),
    ],
)
def test_bad_requests_get_the_specs_codes_and_change_nothing(rt: Runtime, conf, env, code):
    ns = rt.netns("c1")
    bad = rt.call("ADD", conf=rt.config(**conf), container="c1abc", netns=ns, env=env)
    assert bad.rc != 0 and bad.doc["code"] == code, bad.doc
    assert bad.doc["msg"] and bad.stderr == ""
    assert state_vms(rt.host.state) == [] and set(rt.ns_links(ns)) == {"lo"}
    assert leftovers(rt.host) == []
    good = rt.call("ADD", container="c1abc", netns=ns)  # the positive control beside each
    assert good.rc == 0, good.doc


def test_a_missing_namespace_is_an_error(rt: Runtime):
    bad = rt.call("ADD", container="c1abc", netns="/var/run/netns/no-such-ns")
    assert bad.rc != 0 and "no-such-ns" in bad.doc["details"]
    assert state_vms(rt.host.state) == []


def test_mtu_reaches_all_three_links(rt: Runtime):
    ns = rt.netns("c1")
    res = rt.add("c1abc", ns, conf=rt.config(mtu=1400, tapName="fc0"))
    inside = rt.ns_links(ns)
    assert inside["veth0"]["mtu"] == 1400 and inside["fc0"]["mtu"] == 1400
    host_dev = res["interfaces"][0]["name"]
    assert rt.host.links()[host_dev]["mtu"] == 1400
    rt.in_ns(ns, "ip", "link", "set", "dev", "fc0", "mtu", "1500")
    bad = rt.call("CHECK", container="c1abc", netns=ns, conf=rt.config(mtu=1400, tapName="fc0"))
    assert bad.rc != 0 and "mtu 1500" in bad.doc["details"]


def test_cli_sees_attachments(rt: Runtime):
    ns = rt.netns("c1")
    rt.add("c1abc", ns)
    (name,) = state_vms(rt.host.state)
    shown = json.loads(rt.host.fireroute("show", name, "--format", "json").stdout)
    assert (shown["container"], shown["ifname"], shown["netns"]) == ("c1abc", "veth0", ns)
    ls = rt.host.fireroute("ls").stdout
    assert "c1abc" in ls and ns in ls
    jail = rt.host.fireroute("show", name, "--format", "jailer").stdout
    assert f"--netns {ns}" in jail


def test_32_attachments_at_once(rt: Runtime):
    spaces = [rt.netns(f"p{i}") for i in range(32)]

    def add(i: int) -> str:
        return rt.add(f"pod{i}", spaces[i])["ips"][-1]["address"]

    with ThreadPoolExecutor(32) as pool:
        addresses = list(pool.map(add, range(32)))
    assert len(set(addresses)) == 32
    assert rt.host.fireroute("check").returncode == 0

    def delete(i: int) -> int:
        return rt.call("DEL", container=f"pod{i}", netns=spaces[i]).rc

    with ThreadPoolExecutor(32) as pool:
        assert list(pool.map(delete, range(32))) == [0] * 32
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []


def test_dns_is_passed_on_and_reaches_the_guest(rt: Runtime):
    ns = rt.netns("c1")
    dns = {"nameservers": ["192.0.2.53", "2001:db8::53"], "search": ["example.test"]}
    res = rt.add("c1abc", ns, conf=rt.config(dns=dns))
    assert res["dns"] == dns
    (name,) = state_vms(rt.host.state)
    boot = rt.host.fireroute("show", name, "--format", "boot-args").stdout
    assert ":192.0.2.53" in boot and "2001:db8" not in boot  # the kernel ip= takes IPv4 only
    bad = rt.call("ADD", conf=rt.config(dns={"nameservers": "192.0.2.53"}), container="c2",
                  netns=rt.netns("c2"))  # fmt: skip
    assert bad.rc != 0 and bad.doc["code"] == 7 and "dns" in bad.doc["details"]


HOST_LOCAL = "/usr/lib/cni/host-local"


def ipam(data_dir: Path, subnet: str = "10.77.0.0/24") -> dict:
    """Debian's host-local IPAM plugin: leases as files in ``data_dir`` (the subnet exists
    only inside the test's namespaces)."""
    return {"type": "host-local", "subnet": subnet, "dataDir": str(data_dir)}


def leases(data_dir: Path) -> list[str]:
    net = data_dir / "fcnet"
    names = [p.name for p in net.iterdir()] if net.is_dir() else []
    return sorted(n for n in names if n[0].isdigit())


def test_ipam_delegation_gives_host_local_addresses(rt: Runtime, tmp_path: Path):
    assert Path(HOST_LOCAL).exists(), "containernetworking-plugins is not installed"
    data = tmp_path / "ipam"
    conf = rt.config(ipam=ipam(data))
    a, b = rt.netns("a"), rt.netns("b")
    ra = rt.add("ctr-a", a, conf=conf)
    rb = rt.add("ctr-b", b, conf=conf)
    addr_a, addr_b = ra["ips"][-1]["address"], rb["ips"][-1]["address"]
    assert {addr_a, addr_b} == {"10.77.0.2/24", "10.77.0.3/24"}
    assert ra["ips"][-1]["gateway"] == "10.77.0.1" == rb["ips"][-1]["gateway"]
    assert leases(data) == ["10.77.0.2", "10.77.0.3"]
    host_a = ra["interfaces"][0]["name"]
    assert rt.host.addrs(host_a) == ["10.77.0.1/32"]  # the gateway, once per veth
    routes = rt.host.run("ip", "-j", "route", "show", "dev", host_a).stdout
    assert addr_a.split("/")[0] in routes
    assert rt.add("ctr-a", a, conf=conf) == ra  # ADD again: the same attachment and address
    assert rt.call("CHECK", conf=conf, container="ctr-a", netns=a).rc == 0
    assert rt.host.fireroute("check").returncode == 0
    rt.host.run("ip", "route", "del", addr_a.split("/")[0], "dev", host_a)
    bad = rt.call("CHECK", conf=conf, container="ctr-a", netns=a)
    assert bad.rc != 0 and "host route" in bad.doc["details"], bad.doc
    rt.host.fireroute("restore")
    assert rt.call("CHECK", conf=conf, container="ctr-a", netns=a).rc == 0

    assert rt.call("DEL", conf=conf, container="ctr-a", netns=a).rc == 0
    assert leases(data) == ["10.77.0.3"]  # released to host-local
    valid = {"cni.dev/valid-attachments": []}
    g = rt.call("GC", conf={**conf, **valid}, ifname="")
    assert g.rc == 0, g.doc
    assert leases(data) == [] and state_vms(rt.host.state) == [] and leftovers(rt.host) == []


def test_a_failed_ipam_add_changes_nothing_and_a_failed_add_releases(rt: Runtime, tmp_path: Path):
    data = tmp_path / "ipam"
    ns = rt.netns("c1")
    missing = rt.call("ADD", conf=rt.config(ipam={"type": "no-such-ipam"}), container="c1",
                      netns=ns)  # fmt: skip
    assert missing.rc != 0 and "no-such-ipam" in missing.doc["details"]
    # host-local answers, but the address is leased by the CLI already: nothing stays
    rt.host.fireroute("up", "cli-vm", "--mode", "bridge", "--bridge", "brx", "--bridge-address",
                      "10.77.0.1/24", "--guest-ip", "10.77.0.2/24")  # fmt: skip
    bad = rt.call("ADD", conf=rt.config(ipam=ipam(data)), container="c1", netns=ns)
    assert bad.rc != 0 and "10.77.0.2" in bad.doc["details"], bad.doc
    assert leases(data) == [] and set(rt.ns_links(ns)) == {"lo"}
    assert state_vms(rt.host.state) == ["cli-vm"]


def test_a_busy_state_file_is_try_again_later(rt: Runtime):
    from fireroute.state.store import Store

    first, ns = rt.netns("c0"), rt.netns("c1")
    rt.add("c0abc", first)  # the state file exists: its lock can be held here
    with Store(rt.host.state, create=False).locked(timeout=0):
        busy = rt.call("ADD", container="c1abc", netns=ns, env={"FIREROUTE_LOCK_TIMEOUT": "0.2"})
    assert busy.rc != 0 and busy.doc["code"] == 11, busy.doc
    assert set(rt.ns_links(ns)) == {"lo"} and len(state_vms(rt.host.state)) == 1
    assert rt.call("ADD", container="c1abc", netns=ns).rc == 0  # and later it can


def test_port_mappings_are_published(rt: Runtime):
    ns, other = rt.netns("c1"), rt.netns("c2")
    maps = [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
        {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "::"},
    ]
    conf = rt.config(capabilities={"portMappings": True}, runtimeConfig={"portMappings": maps})
    rt.add("c1abc", ns, conf=conf)
    (name,) = state_vms(rt.host.state)
    shown = json.loads(rt.host.fireroute("show", name, "--format", "json").stdout)
    assert [p["spec"] for p in shown["published"]] == ["8080:80/tcp", "127.0.0.1:5353:53/udp"]
    assert "8080" in rt.host.run("nft", "list", "map", "ip", "firecracker", "pub_any").stdout
    taken = rt.call("ADD", conf=conf, container="c2abc", netns=other)
    assert taken.rc != 0 and "published by vm" in taken.doc["details"], taken.doc
    assert set(rt.ns_links(other)) == {"lo"}
    bad = rt.config(runtimeConfig={"portMappings": [{"hostPort": "80"}]})
    assert rt.call("ADD", conf=bad, container="c2abc", netns=other).doc["code"] == 7
    assert rt.call("DEL", conf=conf, container="c1abc", netns=ns).rc == 0
    assert "8080" not in rt.host.nft_text()


@pytest.mark.parametrize(
    "stdin",
    [
        b"[" * 100_000,  # json's RecursionError, once
        b'{"a":' * 50_000,
        json.dumps(
            {
                "cniVersion": "1.1.0",
                "name": "fcnet",
                "type": "fireroute",
                "args": {"x": "a" * (4 << 20)},
            }
        ).encode(),  # fmt: skip
    ],
    ids=["100000-brackets", "50000-objects", "4-MiB"],
)
def test_nesting_and_size_limits_are_a_cni_error_not_a_traceback(rt: Runtime, stdin: bytes):
    ns = rt.netns("c1")
    bad = rt.call("ADD", container="c1abc", netns=ns, raw=stdin)
    assert bad.rc != 0 and bad.doc["code"] == 7 and bad.stderr == "", (bad.doc, bad.stderr)
    assert "nested deeper" in bad.doc["details"] or "bytes on stdin" in bad.doc["details"]
    assert state_vms(rt.host.state) == [] and set(rt.ns_links(ns)) == {"lo"}
    good = rt.call("ADD", container="c1abc", netns=ns)  # the positive control
    assert good.rc == 0, good.doc


VALID = "cni.dev/valid-attachments"


@pytest.mark.parametrize(
    "valid,named",
    [
        (None, f'GC needs "{VALID}"'),
        ({"containerID": "a1", "ifname": "veth0"}, f'"{VALID}" must be a list'),
        (["a1"], f'"{VALID}[0]" must be an object'),
        ([{"containerID": "a1"}], f'"{VALID}[0].ifname" is required'),
        ([{"ifname": "veth0"}], f'"{VALID}[0].containerID" is required'),
        ([{"containerID": "a1", "ifname": 0}], f'"{VALID}[0].ifname" must be'),
        ([{"containerID": ["a1"], "ifname": "veth0"}], f'"{VALID}[0].containerID" must be'),
    ],
)
def test_gc_without_well_formed_valid_attachments_removes_nothing(rt: Runtime, valid, named):
    a1, a2 = rt.netns("a1"), rt.netns("a2")
    rt.add("a1", a1)
    rt.add("a2", a2)
    before = sorted(state_vms(rt.host.state)), rt.ns_links(a1).keys(), rt.ns_links(a2).keys()
    conf = rt.config() if valid is None else rt.config(**{VALID: valid})
    bad = rt.call("GC", conf=conf, ifname="")
    assert bad.rc != 0 and bad.doc["code"] == 7 and named in bad.doc["details"], bad.doc
    assert (sorted(state_vms(rt.host.state)), rt.ns_links(a1).keys(), rt.ns_links(a2).keys()) \
        == before  # fmt: skip
    assert rt.host.fireroute("check").returncode == 0
    # the positive control: a well-formed GC removes exactly the stale attachment
    good = rt.call("GC", conf=rt.config(**{VALID: [{"containerID": "a1", "ifname": "veth0"}]}),
                   ifname="")  # fmt: skip
    assert good.rc == 0, good.doc
    (left,) = state_vms(rt.host.state)
    assert left.startswith("cni-a1-") and set(rt.ns_links(a2)) == {"lo"}
    assert {"veth0", "tap0"} <= set(rt.ns_links(a1))


TWO = {  # the two attachments of one namespace: (container, config keys, ifname) each
    "pod-on-two-networks": (("pod1", {"name": "fcnet"}, "eth0"),
                            ("pod1", {"name": "other", "tapName": "tap1"}, "eth1")),
    "vm-with-two-nics": (("vm1", {}, "veth0"), ("vm1", {"tapName": "tap1"}, "veth1")),
}  # fmt: skip


@pytest.mark.parametrize("shape", TWO)
def test_two_attachments_share_a_namespace(rt: Runtime, shape: str):
    ns = rt.netns("pod")
    (c1, k1, if1), (c2, k2, if2) = TWO[shape]
    conf1, conf2 = rt.config(**k1), rt.config(**k2)
    r1 = rt.add(c1, ns, conf=conf1, ifname=if1)
    r2 = rt.add(c2, ns, conf=conf2, ifname=if2)
    tap1, tap2 = k1.get("tapName", "tap0"), k2["tapName"]
    assert {if1, if2, tap1, tap2} <= set(rt.ns_links(ns))
    assert r1["ips"][-1]["address"] != r2["ips"][-1]["address"]
    names = state_vms(rt.host.state)
    assert len(names) == 2
    for c, conf, ifname in ((c1, conf1, if1), (c2, conf2, if2)):
        assert rt.call("CHECK", conf=conf, container=c, netns=ns, ifname=ifname).rc == 0
    assert rt.host.fireroute("check").returncode == 0
    ls = rt.host.fireroute("ls").stdout
    assert all(n in ls for n in names) and ls.count(ns) == 2
    # CHECK sees each one: the second's redirect broken, the first's CHECK still passes
    rt.in_ns(ns, "tc", "filter", "del", "dev", if2, "ingress")
    bad = rt.call("CHECK", conf=conf2, container=c2, netns=ns, ifname=if2)
    assert bad.rc != 0 and f'does not redirect to "{tap2}"' in bad.doc["details"], bad.doc
    assert rt.call("CHECK", conf=conf1, container=c1, netns=ns, ifname=if1).rc == 0
    assert rt.host.fireroute("check", check=False).returncode == 1
    rt.host.fireroute("restore")
    assert rt.call("CHECK", conf=conf2, container=c2, netns=ns, ifname=if2).rc == 0
    # GC of each network keeps what the runtime lists
    for conf in (conf1, conf2):
        keep = [{"containerID": c1, "ifname": if1}, {"containerID": c2, "ifname": if2}]
        assert rt.call("GC", conf={**conf, VALID: keep}, ifname="").rc == 0
    assert len(state_vms(rt.host.state)) == 2
    rt.host.fireroute("gc")  # and so does fireroute's own: both are alive
    assert len(state_vms(rt.host.state)) == 2 and {if1, if2, tap1, tap2} <= set(rt.ns_links(ns))
    # DEL of the first leaves the second whole
    assert rt.call("DEL", conf=conf1, container=c1, netns=ns, ifname=if1).rc == 0
    assert set(rt.ns_links(ns)) == {"lo", if2, tap2}
    assert rt.call("CHECK", conf=conf2, container=c2, netns=ns, ifname=if2).rc == 0
    assert rt.host.fireroute("check").returncode == 0 and len(state_vms(rt.host.state)) == 1
    assert rt.call("DEL", conf=conf2, container=c2, netns=ns, ifname=if2).rc == 0
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []
    assert set(rt.ns_links(ns)) == {"lo"}


def test_gc_of_the_cli_takes_down_every_attachment_of_a_namespace_that_is_gone(rt: Runtime):
    ns, kept = rt.netns("pod"), rt.netns("other")
    rt.add("pod1", ns)
    rt.add("pod1", ns, conf=rt.config(name="second", tapName="tap1"), ifname="veth1")
    rt.add("other1", kept)
    rt.drop_netns(ns)
    report = rt.host.fireroute("check", check=False)
    assert report.returncode == 1 and report.stdout.count("is gone") == 2, report.stdout
    rt.host.fireroute("gc")
    (left,) = state_vms(rt.host.state)
    assert left.startswith("cni-other1-") and rt.host.fireroute("check").returncode == 0


@pytest.mark.parametrize(
    "keys,ifname,there",
    [
        ({"name": "other"}, "veth0", 'already has "veth0": the veth of vm'),  # same ifname
        ({"name": "other"}, "veth1", 'already has "tap0": the tap of vm'),  # same tap name
        ({"tapName": "veth0"}, "veth1", 'already has "veth0": the veth of vm'),
        ({"tapName": "tap1"}, "tap0", 'already has "tap0": the tap of vm'),
    ],
)
def test_a_clash_in_one_namespace_is_refused_naming_what_is_there(
    rt: Runtime, keys: dict, ifname: str, there: str
):
    ns = rt.netns("pod")
    rt.add("pod1", ns)
    (first,) = state_vms(rt.host.state)
    links = set(rt.ns_links(ns))
    bad = rt.call("ADD", conf=rt.config(**keys), container="pod1", netns=ns, ifname=ifname)
    assert bad.rc != 0 and bad.doc["code"] == 100 and bad.stderr == "", (bad.doc, bad.stderr)
    assert there in bad.doc["details"] and first in bad.doc["details"], bad.doc
    assert "UNIQUE" not in bad.doc["details"] and "constraint" not in bad.doc["details"]
    assert state_vms(rt.host.state) == [first] and set(rt.ns_links(ns)) == links
    assert rt.host.fireroute("check").returncode == 0
    # the positive control: the same request with names of its own in the namespace
    good = rt.call("ADD", conf=rt.config(**{**keys, "tapName": "tap9"}), container="pod1",
                   netns=ns, ifname="veth9")  # fmt: skip
    assert good.rc == 0, good.doc


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(command=st.sampled_from(["ADD", "CHECK", "DEL", "GC", "STATUS"]), stdin=stdin_texts())
@example(command="ADD", stdin=b'{"cniVersion": "1.1.0", "name": "fcnet", "type": "fireroute"}')
@example(command="ADD", stdin=b'{"cniVersion": "1.1.0", "name": "fcnet", "type": "fireroute", '
         b'"mtu": "x", "mtu": 1400}')  # fmt: skip
@example(command="ADD", stdin=b'{"cniVersion": "1.1.0", "args": ' + b"[" * 5000 + b"}")
@example(command="ADD", stdin=b'{"cniVersion": "1.1.0", "mtu": 01}')  # a SystemError once
@example(command="DEL", stdin=b'{"cniVersion": "1.1.0", "dns": {"domain": "a\tb"}}')
def test_fuzzed_configurations_through_the_real_process(rt: Runtime, command: str, stdin: bytes):
    """Some of tests/unit/test_cni_fuzz.py's configurations through the program itself:
    one result or one error object on stdout, nothing on stderr; what an ADD made, its DEL
    removes. The state file is the test's whatever the configuration says (the last key
    counts), and no IPAM plugin can be found."""
    stdin = stdin[:-1] + b', "state": ' + json.dumps(str(rt.host.state)).encode() + b"}"
    ns = rt.netns("fz") if not rt.made else f"/var/run/netns/{rt.made[0]}"
    env = {"CNI_PATH": "/nonexistent/cni"}
    got = rt.call(command, container="fz1", netns=ns, raw=stdin, env=env)
    assert got.stderr == "", got.stderr
    well_formed(got.rc, got.doc)
    if command == "ADD" and got.rc == 0:
        assert rt.call("DEL", container="fz1", netns=ns, raw=stdin, env=env).rc == 0
    assert state_vms(rt.host.state) == [] and leftovers(rt.host) == []


FAKE_IPAM = """#!/bin/sh
# an IPAM plugin that leases (a file per container) and answers ADD with {answer}
lease="{dir}/$CNI_CONTAINERID"
case "$CNI_COMMAND" in
ADD) touch "$lease"; echo '{answer}' ;;
DEL) rm -f "$lease" ;;
VERSION) echo '{{"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]}}' ;;
esac
"""


@pytest.mark.parametrize(
    "answer,ok",
    [
        ('{"cniVersion": "1.1.0", "ips": [{"address": "10.79.0.2/24", "gateway": "10.79.0.1"}]}',
         True),
        ('{"cniVersion": "1.1.0", "ips": 5}', False),
        ('{"cniVersion": "1.1.0", "ips": [{"address": 5, "gateway": "10.79.0.1"}]}', False),
    ],
)  # fmt: skip
def test_a_malformed_ipam_answer_is_released(rt: Runtime, tmp_path: Path, answer: str, ok: bool):
    plugins, leased = tmp_path / "plugins", tmp_path / "leases"
    plugins.mkdir(), leased.mkdir()
    fake = plugins / "fake-ipam"
    fake.write_text(FAKE_IPAM.format(dir=leased, answer=answer))
    fake.chmod(0o755)
    ns = rt.netns("c1")
    conf = rt.config(ipam={"type": "fake-ipam"})
    got = rt.call("ADD", conf=conf, container="c1", netns=ns, env={"CNI_PATH": str(plugins)})
    if ok:  # the positive control: the same plugin's well-formed answer is used and kept
        assert got.rc == 0 and got.doc["ips"][-1]["address"] == "10.79.0.2/24", got.doc
        assert [p.name for p in leased.iterdir()] == ["c1"]
        return
    assert got.rc != 0 and got.doc["code"] == 103 and '"ips' in got.doc["details"], got.doc
    assert got.stderr == "" and list(leased.iterdir()) == []  # the lease went back
    assert state_vms(rt.host.state) == [] and set(rt.ns_links(ns)) == {"lo"}


TOOLS = ("ip", "tc", "sysctl", "nsenter", "nft", "iptables-nft-save")


def recording_path(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose ip, tc, sysctl, nsenter, nft and iptables-nft-save each write their
    command line to a log, then run the real program."""
    import shutil

    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        assert real is not None, tool
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    return f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", log


def test_the_plugin_starts_no_process_but_the_tables_nft(rt: Runtime, tmp_path: Path):
    """A cold ADD or DEL does its work in-process (docs/cni.md, the verbs): the table's first
    attachment makes the table with ``nft -f -`` and reads nothing for warnings nobody sees
    (no ``iptables-nft-save``); one more ADD and its DEL start no process at all. The control:
    the CLI's ``up`` through the same PATH runs ``ip`` and ``nft``, so the log would show
    them."""
    from tests.cni.runtime import LAUNCHER

    path, log = recording_path(tmp_path)

    def calls() -> list[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return [c for c in lines if str(LAUNCHER) not in c]  # (the harness's own nsenter)

    env = {"PATH": path}
    rt.add("first", rt.netns("first"), env=env)
    assert calls() == ["nft -f -"]
    ns = rt.netns("second")
    rt.add("second", ns, env=env)
    assert calls() == []
    assert rt.call("DEL", container="second", netns=ns, env=env).rc == 0
    assert calls() == []
    import subprocess

    cli = [str(LAUNCHER), "up", "cli", "--pool", "172.31.0.0/24"]
    up = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{rt.host.ns}", *cli],
        env={"PATH": path, "FIREROUTE_STATE": str(tmp_path / "cli.db")},
        capture_output=True,
        text=True,
    )
    assert up.returncode == 0, up.stderr
    assert {c.split()[0] for c in calls()} >= {"ip", "nft"}
