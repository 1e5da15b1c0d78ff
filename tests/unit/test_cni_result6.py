"""The ADD result of an attachment with IPv6 (docs/cni.md): per CNI version, the IPv6 address
on the namespace's veth (CNI_IFNAME, where runtimes and chained plugins read the container's
addresses), gateway fe80::1; the VM's interface keeps exactly its one IPv4 entry (the go SDK
turns it into ``ip=`` and refuses more). Without IPv6, the result is as before. And the
configuration's ``ipv6``/``pool6``, an IPAM answer's IPv6 address refused, refusals in the
configuration's words."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Network

import pytest

from fireroute import request
from fireroute.api import Vm as ApiVm
from fireroute.cni import plugin
from fireroute.cni import protocol as p
from fireroute.errors import UsageError
from fireroute.model import Options, Vm

NS = "/run/netns/pod"
CONF = {"cniVersion": "1.0.0", "name": "fc", "type": "fireroute"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1abc", "CNI_NETNS": NS, "CNI_IFNAME": "veth0"}


def req(conf: dict) -> p.Request:
    return p.Request({**ENV, "CNI_PATH": "/opt/cni/bin"}, json.dumps(conf).encode())


def code(conf: dict) -> int:
    with pytest.raises(p.CniError) as e:
        req(conf)
    return e.value.code


def attachment(v6: bool) -> ApiVm:
    o = Options(mode="cni", netns=NS, container="c1abc", network="fc", ifname="veth0", ipv6=v6)
    net6 = IPv6Network("fd00:77:0:3::/64") if v6 else None
    v = Vm("cni-c1abc-1", IPv4Network("172.16.0.12/30"), "frc0", "", "up0", o, "active", net6)
    v.owner = "5ca1ab1e"
    return ApiVm(v)


def result(version: str, v6: bool) -> dict:
    conf = {"cniVersion": version, "name": "fc", "type": "fireroute", "ipv6": v6}
    return plugin._result(req(conf), attachment(v6), ([], []))


@pytest.mark.parametrize("version", p.SUPPORTED)
def test_the_v6_address_is_on_the_namespace_veth_and_the_vm_keeps_one_ipv4(version: str):
    res = result(version, True)
    ifs, ips = res["interfaces"], res["ips"]
    on = {i["address"]: ifs[i["interface"]] for i in ips if ":" in i["address"]}
    assert list(on) == ["fd00:77:0:3::2/64"]
    assert on["fd00:77:0:3::2/64"] == {"name": "veth0", "mac": on["fd00:77:0:3::2/64"]["mac"],
                                       "sandbox": NS}  # fmt: skip
    (six,) = [i for i in ips if ":" in i["address"]]
    assert six["gateway"] == "fe80::1"
    # the VM's interface (sandbox: the container id) holds one IP, the IPv4 one
    vm_ips = [i for i in ips if ifs[i["interface"]].get("sandbox") == "c1abc"]
    assert [i["address"] for i in vm_ips] == ["172.16.0.14/30"]
    assert [i.get("version") for i in ips] == (
        ["4", "4", "6"] if version < "1.0.0" else [None, None, None]
    )
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "172.16.0.13"}]  # (v6: from RAs)


def test_without_ipv6_the_result_is_as_before():
    res = result("1.0.0", False)
    assert [i["address"] for i in res["ips"]] == ["172.16.0.14/30", "172.16.0.14/30"]
    assert [i["interface"] for i in res["ips"]] == [1, 3]


def test_a_refusal_names_the_configurations_keys():
    text = "--pool6 fd00::/48 needs --ipv6; --pool 10.0.0.0/8; --allow-host-port 53"
    assert (
        plugin._keys(text)
        == '"pool6" fd00::/48 needs "ipv6"; "pool" 10.0.0.0/8; "allowHostPorts" 53'
    )


def test_an_ipam_result_with_an_ipv6_address_is_refused_in_one_line():
    """A VM's IPv6 is a /64 of fireroute's pool, never an address of an IPAM subnet: the
    refusal names the address and the keys that give IPv6 (code 7: the configuration)."""
    from fireroute.cni import ipam

    v4 = {"address": "10.0.0.5/24", "gateway": "10.0.0.1"}
    assert ipam.address({"ips": [v4]}) == ("10.0.0.5/24", "10.0.0.1")  # the positive control
    for ips in ([{"address": "fd00::5/64"}, v4], [v4, {"address": "fd00::5/64"}]):
        with pytest.raises(p.CniError) as e:
            ipam.address({"ips": ips})
        assert e.value.code == p.BAD_CONFIG and "\n" not in e.value.details
        assert "IPv6 address (fd00::5/64)" in e.value.details and '"ipv6"' in e.value.details


def test_ipv6_and_pool6_are_options_of_up():
    r = req({**CONF, "ipv6": True, "pool6": "fd00:77::/48"})
    assert r.options() == {"ipv6": True, "pool6": "fd00:77::/48"}
    assert code({**CONF, "ipv6": "yes"}) == p.BAD_CONFIG  # a bool, as CONFIG says
    with pytest.raises(p.CniError) as e:  # pool6 is checked as every door's --pool6
        req({**CONF, "ipv6": True, "pool6": "fd00:77::/96"}).options()
    assert e.value.code == p.BAD_CONFIG and "pool6" in e.value.details
    with pytest.raises(p.CniError) as e:  # and it is the pool of v6 blocks only
        req({**CONF, "pool6": "fd00:77::/48"}).options()
    assert e.value.code == p.BAD_CONFIG and "needs --ipv6" in e.value.details


@pytest.mark.parametrize("version", p.SUPPORTED)
def test_an_ipv6_entry_is_stamped_version_6_before_1_0_0(version):
    ifaces = [{"name": "fr-x"}, {"name": "veth0", "sandbox": "/run/netns/x"}]
    ips = [
        {"address": "10.9.0.2/30", "gateway": "10.9.0.1", "interface": 1},
        {"address": "fd00:77::2/64", "gateway": "fe80::1", "interface": 1},
    ]
    out = p.result(version, ifaces, ips, [])
    stamps = [ip.get("version") for ip in out["ips"]]  # type: ignore[attr-defined]
    assert stamps == (["4", "6"] if version < "1.0.0" else [None, None])


def test_a_port_mapping_on_an_ipv6_host_address_is_published_there_with_ipv6():
    """With ``"ipv6": true`` a mapping's IPv6 ``hostIP`` is a port on that address (``::``, as
    ``0.0.0.0``, every address: one spec when a port is mapped for both families); without
    IPv6 it is left out, as before (the guest has no IPv6 address to forward it to)."""
    maps = [
        {"hostPort": 8080, "containerPort": 80, "hostIP": "0.0.0.0"},
        {"hostPort": 8080, "containerPort": 80, "hostIP": "::"},
        {"HostPort": 8443, "ContainerPort": 443, "HostIP": "2001:db8::2"},
    ]
    conf = {**CONF, "capabilities": {"portMappings": True}, "runtimeConfig": {"portMappings": maps}}
    six = p.port_mappings(req({**conf, "ipv6": True}).config)
    assert six == ["8080:80/tcp", "[2001:db8::2]:8443:443/tcp"]
    assert p.port_mappings(req(conf).config) == ["8080:80/tcp"]
    # [::1] and what is no host address are refused as --publish's, in the configuration's words
    for addr, why in (("::1", "a port on [::1] cannot be forwarded"), ("fe80::5", "no host")):
        m = {"hostPort": 8080, "containerPort": 80, "hostIP": addr}
        bad = req({**conf, "ipv6": True, "runtimeConfig": {"portMappings": [m]}})
        with pytest.raises(UsageError) as e:
            request.options(plugin._fields(bad))
        out = plugin._as_cni(e.value)
        assert out.code == p.BAD_CONFIG and "\n" not in out.details, out.details
        assert why in out.details and '"runtimeConfig.portMappings"' in out.details, out.details
