"""Pod-to-pod on one node with an IPAM subnet (docs/cni.md, Kubernetes): two attachments whose
addresses come from Debian's host-local (one shared 10.22.0.0/16, gateway .1), each with a
guest wired to its tap as a VMM would be (tests/kernel/tapwire.py) and configured as the go
SDK's ``ip=`` configures a VM: the subnet's prefix, the gateway as default route. Such a guest
takes its peers as on-link and asks for them by ARP.

With ``allowPeers`` the host answers that ARP (proxy ARP on each host veth, want/cni.py) and the
guests reach each other by ICMP and TCP, unmasqueraded; the node reaches a pod, another node
(the internet namespace, with a route to the subnet) does not; ``fireroute check`` names the
proxy ARP switched off behind fireroute's back and ``restore`` puts it back. Without
``allowPeers`` a guest does not reach its peer, not even with the peer's neighbour entry given
by hand (the isolation rules drop it), while the same guest reaches the internet namespace
through the host (the control)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cni.runtime import Runtime, leftovers, state_vms, wire_guest
from tests.conftest import Host, sh
from tests.kernel.tapwire import Wired
from tests.kernel.test_bridge_isolation import PING
from tests.kernel.test_isolation import CLIENT, SERVER

pytestmark = pytest.mark.privileged

HOST_LOCAL = "/usr/lib/cni/host-local"
SUBNET = "10.22.0.0/16"
INTERNET = "203.0.113.1"


@dataclass
class Pod:
    guest: str  # the guest's namespace
    ip: str  # its address
    host_dev: str  # its host veth
    netns: str  # the runtime's namespace


class Lab:
    def __init__(self, host: Host, data: Path) -> None:
        self.host = host
        self.rt = Runtime(host)
        self.wires: list[Wired] = []
        self.data = data

    def conf(self, allow_peers: bool) -> dict:
        ipam = {"type": "host-local", "subnet": SUBNET, "dataDir": str(self.data)}
        return self.rt.config(cniVersion="1.0.0", allowPeers=allow_peers, ipam=ipam)

    def pod(self, name: str, allow_peers: bool) -> Pod:
        netns = self.rt.netns(name)
        res = self.rt.add(f"ctr-{name}", netns, conf=self.conf(allow_peers))
        (ip,) = [i for i in res["ips"] if i["interface"] == 3]  # (the VM's interface)
        assert ip["address"].endswith("/16") and ip["gateway"] == "10.22.0.1", ip
        wired = Wired(netns.rsplit("/", 1)[1])
        self.wires.append(wired)
        guest = wire_guest(wired, res, f"ctr-{name}")
        return Pod(guest, ip["address"].split("/")[0], res["interfaces"][0]["name"], netns)

    def delete(self, name: str, pod: Pod, allow_peers: bool) -> None:
        a = self.rt.call("DEL", self.conf(allow_peers), container=f"ctr-{name}", netns=pod.netns)
        assert a.rc == 0, a.doc

    def sysctl(self, path: str) -> str:
        return self.host.run("cat", f"/proc/sys/{path}").stdout.strip()

    def close(self) -> None:
        for w in self.wires:
            w.close()
        self.rt.close()


@pytest.fixture
def lab(host: Host, tmp_path: Path) -> Iterator[Lab]:
    assert Path(HOST_LOCAL).exists(), "containernetworking-plugins is not installed"
    lab = Lab(host, tmp_path / "ipam")
    try:
        yield lab
    finally:
        lab.close()


def pings(guest: str, addr: str) -> bool:
    """An ICMP echo from ``guest`` to ``addr`` is answered."""
    return (
        sh("ip", "netns", "exec", guest, sys.executable, "-c", PING, addr, check=False).returncode
        == 0
    )


def connect(guest: str, addr: str, port: int) -> str:
    p = sh("ip", "netns", "exec", guest, sys.executable, "-c", CLIENT, addr, str(port), check=False)
    return p.stdout.strip()


def test_with_allow_peers_guests_of_one_ipam_subnet_reach_each_other(lab: Lab):
    a, b = lab.pod("a", True), lab.pod("b", True)
    assert pings(a.guest, b.ip) and pings(b.guest, a.ip)
    # the peer is on-link for the guest, answered by the host's veth (proxy ARP)
    neigh = sh("ip", "-n", a.guest, "neigh", "show", b.ip).stdout
    mac = lab.host.links()[a.host_dev]["address"]
    assert f"lladdr {mac}" in neigh, (neigh, mac)
    server = ["ip", "netns", "exec", b.guest, sys.executable, "-c", SERVER, f"{b.ip}:8080"]
    proc = subprocess.Popen(server, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert connect(a.guest, b.ip, 8080) == f"hello {a.ip}"  # not masqueraded
        # the node reaches a pod (kubelet's probes)
        node = lab.host.run(sys.executable, "-c", CLIENT, b.ip, "8080").stdout.strip()
        assert node == "hello 10.22.0.1"
        # from off the node a pod's address is not reached, even routed to the node (only
        # published ports lead in), while the node's own address there is (the route works)
        sh("ip", "-n", lab.host.inet, "route", "add", SUBNET, "via", "203.0.113.2")
        assert pings(lab.host.inet, "10.22.0.1")
        assert connect(lab.host.inet, b.ip, 8080).startswith("FAIL")
    finally:
        proc.kill()
        proc.wait()
    assert lab.host.fireroute("check").returncode == 0
    # proxy ARP is part of the attachment: check names it gone, restore puts it back
    lab.host.run("sysctl", "-qw", f"net.ipv4.conf.{a.host_dev}.proxy_arp=0")
    bad = lab.host.fireroute("check", check=False)
    assert bad.returncode != 0 and f"conf/{a.host_dev}/proxy_arp" in bad.stdout + bad.stderr
    lab.host.fireroute("restore")
    assert lab.host.fireroute("check").returncode == 0
    assert lab.sysctl(f"net/ipv4/conf/{a.host_dev}/proxy_arp") == "1"
    lab.delete("a", a, True)
    lab.delete("b", b, True)
    assert state_vms(lab.host.state) == [] and leftovers(lab.host) == []


def test_without_allow_peers_guests_of_one_ipam_subnet_do_not(lab: Lab):
    a, b = lab.pod("a", False), lab.pod("b", False)
    assert pings(a.guest, INTERNET)  # the control: a's guest is forwarded by the host
    assert lab.sysctl(f"net/ipv4/conf/{a.host_dev}/proxy_arp") == "0"
    assert not pings(a.guest, b.ip) and not pings(b.guest, a.ip)
    # nor with the peer's neighbour entry given by hand: the host drops what it forwards
    mac = lab.host.links()[a.host_dev]["address"]
    sh("ip", "-n", a.guest, "neigh", "replace", b.ip, "lladdr", mac, "dev", "eth0")
    assert not pings(a.guest, b.ip)
    assert connect(a.guest, b.ip, 8080).startswith("FAIL")
    assert lab.host.fireroute("check").returncode == 0
    lab.delete("a", a, False)
    lab.delete("b", b, False)
    assert state_vms(lab.host.state) == [] and leftovers(lab.host) == []
