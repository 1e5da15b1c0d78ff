"""A guest booted in a pod containerd made, as a VMM started for a Kubernetes pod would run:
in the pod's network namespace, on the tap fireroute's result names, with the result's MAC
and the ``ip=`` argument built from the result as firecracker-go-sdk builds it. It reaches
the internet namespace through NAT and is reached through the pod's hostPort (containerd's
port mapping, taken by fireroute); after StopPodSandbox/RemovePodSandbox nothing is left."""

from __future__ import annotations

import sys
from pathlib import Path

from fireroute.lab.guest import GuestImage
from fireroute.lab.sandbox import HOST_UPLINK_IP
from fireroute.lab.vmm import start_guest
from tests.conftest import sh
from tests.cri.conftest import Node
from tests.e2e.common import E2E_MARKS
from tests.e2e.test_cni_e2e import go_sdk_ip_arg, vm_interface
from tests.e2e.test_modes_e2e import CLIENT, LISTEN, fetch_ok

pytestmark = E2E_MARKS


def test_a_guest_boots_in_a_pod_on_the_result_and_is_reached_by_its_host_port(
    node: Node, image: GuestImage, tmp_path: Path
):
    ct = node.ct
    pod = ct.run_pod("vm", ports=[(8082, 8080)])
    try:
        result = node.cached(pod)["result"]
        vm_if, _ = vm_interface(result, pod)
        guest = start_guest(
            image,
            netns=ct.netns_of(pod),
            tap=vm_if["name"],
            mac=vm_if["mac"],
            boot_args=go_sdk_ip_arg(result, pod),
            name="cri-guest",
            log_path=tmp_path / "guest.log",
        )
        try:
            assert f"client={HOST_UPLINK_IP}" in fetch_ok(guest)  # through NAT
            status, out = guest.run(LISTEN.format(name="cri-pod"), timeout=20)
            assert status == 0, out
            p = sh("ip", "netns", "exec", node.host.inet, sys.executable, "-c",
                   CLIENT.replace("8080", "8082"), HOST_UPLINK_IP, check=False)  # fmt: skip
            assert p.stdout.strip() == "hello-from-cri-pod", p.stderr
        finally:
            guest.stop()
    finally:
        ct.remove_pod(pod)
    node.empty()
