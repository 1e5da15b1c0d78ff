"""The ADD result of an attachment with IPv6 (docs/cni.md): per CNI version, the IPv6 address
on the namespace's veth (CNI_IFNAME, where runtimes and chained plugins read the container's
addresses), gateway fe80::1; the VM's interface keeps exactly its one IPv4 entry (the go SDK
turns it into ``ip=`` and refuses more). Without IPv6, the result is as before."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Network

import pytest

from fireroute.api import Vm as ApiVm
from fireroute.cni import plugin
from fireroute.cni import protocol as p
from fireroute.model import Options, Vm

NS = "/run/netns/pod"
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1abc", "CNI_NETNS": NS, "CNI_IFNAME": "veth0"}


def attachment(v6: bool) -> ApiVm:
    o = Options(mode="cni", netns=NS, container="c1abc", network="fc", ifname="veth0", ipv6=v6)
    net6 = IPv6Network("fd00:77:0:3::/64") if v6 else None
    v = Vm("cni-c1abc-1", IPv4Network("172.16.0.12/30"), "frc0", "", "up0", o, "active", net6)
    v.owner = "5ca1ab1e"
    return ApiVm(v)


def result(version: str, v6: bool) -> dict:
    conf = {"cniVersion": version, "name": "fc", "type": "fireroute", "ipv6": v6}
    req = p.Request(ENV, json.dumps(conf).encode())
    return plugin._result(req, attachment(v6), ([], []))


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
