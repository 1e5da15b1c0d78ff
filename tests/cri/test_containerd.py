"""fireroute's CNI plugin driven by containerd's CRI, as kubelet drives it on a Kubernetes node:
Debian 12's containerd 1.6 (tests/cri/containerd.py) runs inside a throwaway node namespace,
with docs/cni.md's Kubernetes conflist (cniVersion 1.0.0, the ``portMappings`` capability,
``allowPeers``, addresses from host-local in the node's pod CIDR).

RunPodSandbox with a hostPort makes fireroute's attachment (containerd 1.6 sends the mapping
with Go's field names, ``HostPort``...); PodSandboxStatus reports fireroute's address; a guest
wired to the tap the result names (tests/kernel/tapwire.py) reaches the internet namespace
through NAT and is reached through the hostPort; Stop/RemovePodSandbox leave nothing; a
containerd restart keeps every pod's network; 16 pods at once, two of which (guests wired to
their taps) reach each other, one reached from the node too; the CNI verbs containerd calls
are recorded. The negative control: the same plugin with the IP entry on CNI_IFNAME taken out
of its result fails RunPodSandbox, and fireroute's DEL still leaves nothing."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import grpc
import pytest

from fireroute.lab.sandbox import HOST_UPLINK_IP, INTERNET_IP
from tests.cni.runtime import leftovers, state_vms, wire_guest
from tests.conftest import Host, needs_root_to, sh
from tests.cri.conftest import PLUGINS, SUBNET, Node, conflist
from tests.cri.containerd import Containerd
from tests.kernel.tapwire import Wired
from tests.kernel.test_bridge_isolation import PING

pytestmark = [pytest.mark.privileged, needs_root_to("create network namespaces")]

NO_IFNAME_IP = Path(__file__).with_name("no_ifname_ip.py")
GO_KEYS = {"HostPort", "ContainerPort", "Protocol", "HostIP"}


def ns_links(netns: str) -> dict[str, dict]:
    out = sh("nsenter", f"--net={netns}", "ip", "-j", "link", "show").stdout
    return {d["ifname"]: d for d in json.loads(out)}


@contextlib.contextmanager
def guest_in(node: Node, pod: str, label: str) -> Iterator[str]:
    """A guest on pod ``pod``'s tap (:func:`wire_guest`): its namespace's name."""
    handle = f"{node.host.ns}-{label}"
    sh("ip", "netns", "attach", handle, node.ct.netns_of(pod).split("/")[2])
    wired = Wired(handle)
    try:
        yield wire_guest(wired, node.cached(pod)["result"], pod)
    finally:
        wired.close()
        sh("ip", "netns", "del", handle, check=False)


def pings(guest: str, addr: str) -> bool:
    """An ICMP echo from ``guest`` to ``addr`` is answered."""
    p = sh("ip", "netns", "exec", guest, sys.executable, "-c", PING, addr, check=False)
    return p.returncode == 0


FETCH = "import urllib.request as u, sys; print(u.urlopen(sys.argv[1], timeout=5).read().decode())"
SERVE = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 80)); s.listen(1); print('ready', flush=True)\n"
    "c, _ = s.accept(); c.sendall(b'hello-from-pod\\n'); c.close()\n"
)
CONNECT = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
    "sys.stdout.write(s.makefile().readline())\n"
)


def test_a_pod_with_a_host_port_runs_is_reached_and_leaves_nothing(node: Node):
    ct = node.ct
    start = len(ct.verbs("fireroute"))
    pod = ct.run_pod("web", ports=[(8080, 80)])
    try:
        cached = node.cached(pod)
        # containerd 1.6 sent the mapping with Go's field names, and fireroute took it
        (mapping,) = cached["capabilityArgs"]["portMappings"]
        assert set(mapping) == GO_KEYS, mapping
        result = cached["result"]
        status = ct.status(pod).status
        assert status.state == ct.api.SANDBOX_READY
        (veth_ip,) = [
            ip for ip in result["ips"] if result["interfaces"][ip["interface"]]["name"] == "eth0"
        ]
        assert status.network.ip == veth_ip["address"].split("/")[0]
        # the pod's namespace holds the links the result names, with their MACs
        links = ns_links(ct.netns_of(pod))
        inside = [i for i in result["interfaces"] if i.get("sandbox") == ct.netns_path(pod)]
        assert sorted(i["name"] for i in inside) == ["eth0", "tap0"]
        for i in inside:
            assert links[i["name"]]["address"] == i["mac"], (i, links)
        assert len(state_vms(node.host.state)) == 1
        # check reads the pod's namespace by containerd's path, seen in containerd's mounts
        node.check()

        with guest_in(node, pod, "pod") as guest:
            out = sh("ip", "netns", "exec", guest, sys.executable, "-c", FETCH,
                     f"http://{INTERNET_IP}/").stdout  # fmt: skip
            assert out.strip() == f"hello-from-internet client={HOST_UPLINK_IP}"  # NAT
            server = subprocess.Popen(
                ["ip", "netns", "exec", guest, sys.executable, "-c", SERVE],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                # a port the pod did not map does not lead to it; the mapped one does
                got = sh("ip", "netns", "exec", node.host.inet, sys.executable, "-c", CONNECT,
                         HOST_UPLINK_IP, "8081", check=False)  # fmt: skip
                assert got.returncode != 0 and "hello" not in got.stdout, got.stdout
                got = sh("ip", "netns", "exec", node.host.inet, sys.executable, "-c", CONNECT,
                         HOST_UPLINK_IP, "8080", check=False)  # fmt: skip
                assert got.stdout.strip() == "hello-from-pod", got.stderr
            finally:
                server.kill()
                server.wait()
    finally:
        ct.remove_pod(pod)
    node.empty()
    assert ct.host("ls", "/run/netns").stdout.split() == []  # containerd removed the pod's
    # what containerd called: ADD; DEL with the namespace (StopPodSandbox), then DEL without
    # it (RemovePodSandbox stops the pod again; the namespace is gone by then); never
    # VERSION, CHECK, STATUS or GC
    calls = ct.verbs("fireroute")[start:]
    path = calls[0][2]
    assert path.startswith("/var/run/netns/cni-"), calls
    assert calls == [("ADD", pod, path), ("DEL", pod, path), ("DEL", pod, "")], calls


def test_a_containerd_restart_keeps_every_pods_network(node: Node):
    ct = node.ct
    pod = ct.run_pod("kept", ports=[(8081, 80)])
    try:
        ip = ct.status(pod).status.network.ip
        adds = [c for c in ct.verbs("fireroute") if c[0] == "ADD"]
        netns = ct.netns_of(pod)
        before, old = ns_links(netns), ct.pid
        ct.stop()
        assert not Path(f"/proc/{old}").exists()  # containerd is gone, the pod is not
        assert len(state_vms(node.host.state)) == 1 and ns_links(netns) == before
        ct.start()
        assert ct.pid != old
        status = ct.status(pod).status
        assert status.state == ct.api.SANDBOX_READY and status.network.ip == ip
        assert [c for c in ct.verbs("fireroute") if c[0] == "ADD"] == adds  # no ADD again
        node.check()
    finally:
        ct.remove_pod(pod)
    node.empty()


def test_sixteen_pods_at_once(node: Node):
    ct = node.ct
    with ThreadPoolExecutor(16) as pool:
        pods = list(pool.map(lambda n: ct.run_pod(f"p{n}", ports=[(9000 + n, 80)]), range(16)))
    try:
        ips = [ct.status(p).status.network.ip for p in pods]
        assert len(set(ips)) == 16 and len(state_vms(node.host.state)) == 16
        assert all(IPv4Address(ip) in IPv4Network(SUBNET) for ip in ips), ips  # host-local's
        assert len(node.leases()) == 16
        node.check()
        # the Kubernetes network model on a node: pod to pod (two guests that take each other
        # as on-link in the pod CIDR: allowPeers, proxy ARP), node to pod
        with guest_in(node, pods[0], "pa") as a, guest_in(node, pods[1], "pb") as b:
            assert pings(a, ips[1]) and pings(b, ips[0])
            assert node.host.run(sys.executable, "-c", PING, ips[0], check=False).returncode == 0
    finally:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(ct.remove_pod, pods))
    node.empty()


def test_a_result_without_an_ip_on_cni_ifname_fails_run_pod_sandbox(node: Node, tmp_path: Path):
    # the control: fireroute's own result starts a pod
    pod = node.ct.run_pod("control")
    node.ct.remove_pod(pod)
    node.empty()
    # the same plugin, its result without the IP entry on eth0 (the VM interface keeps one)
    plugins = {**PLUGINS, "fireroute": f"/usr/bin/python3 -S {NO_IFNAME_IP}"}
    host = Host(node.host.ns, node.host.inet, tmp_path / "state.db")
    with Containerd(f"/var/run/netns/{host.ns}", conflist(host.state), plugins) as ct:
        with pytest.raises(grpc.RpcError) as e:
            ct.run_pod("noip")
        assert "failed to find network info" in str(e.value), e.value
        # the ADD succeeded (containerd read its result), and containerd undid it: one DEL
        add, delete = ct.verbs("fireroute")
        assert add[0] == "ADD" and delete == ("DEL", *add[1:]), (add, delete)
        assert leftovers(host) == [] and state_vms(host.state) == []
        assert ct.cached_results == []
