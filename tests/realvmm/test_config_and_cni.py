"""The two ways fireroute hands a VM to Firecracker without its API: a ``--config-file``
that ``fireroute config --merge`` wrote, and a CNI result (Firecracker started inside the CNI
namespace on the tap the result names, with the result's MAC and an ``ip=`` built the way
firecracker-go-sdk builds it)."""

from __future__ import annotations

import json
from pathlib import Path

from fireroute.lab.sandbox import HOST_UPLINK_IP, INTERNET_IP
from tests.cni.runtime import Runtime, leftovers, state_vms
from tests.conftest import Host
from tests.e2e.test_cni_e2e import go_sdk_ip_arg, vm_interface
from tests.realvmm.harness import REALVMM_MARKS, Lab, UdpSink, assert_identity, probe_args

pytestmark = REALVMM_MARKS

PORT = 5000


def test_config_merge_output_boots_firecracker(lab: Lab, tmp_path: Path):
    rec = lab.up("vm1")
    base = tmp_path / "vm1.json"
    base.write_text(
        json.dumps(
            {
                "boot-source": {"kernel_image_path": str(lab.kernel), "boot_args": probe_args("")},
                "drives": [],
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
            }
        )
    )
    lab.fireroute("config", "vm1", "--merge", str(base), "-o", str(base))
    merged = json.loads(base.read_text())
    assert merged["network-interfaces"] == [rec["firecracker"]]
    fc = lab.firecracker("vm1", config_file=base)
    probe = fc.wait()
    assert_identity(probe, rec)
    assert rec["boot_args"] in (probe.line("cmdline") or ""), probe
    print(f"--config-file: {probe.line('mac=')}; {probe.line('ping gw')}")


def test_a_cni_result_boots_firecracker_in_its_namespace(lab: Lab, tmp_path: Path):
    rt = Runtime(Host(lab.sb.host, lab.sb.internet, tmp_path / "cni-state.db"))  # type: ignore[attr-defined]
    try:
        netns = rt.netns("ctr1")
        result = rt.add("ctr1", netns)
        vm_if, ip = vm_interface(result, "ctr1")
        tap = vm_if["name"]  # the tap inside the namespace, which the VM's entry names
        assert any(i["name"] == tap and i.get("sandbox") == netns for i in result["interfaces"])
        config = tmp_path / "cni-vm.json"
        boot_args = go_sdk_ip_arg(result, "ctr1")
        config.write_text(
            json.dumps(
                {
                    "boot-source": {
                        "kernel_image_path": str(lab.kernel),
                        "boot_args": probe_args(boot_args, udp=f"{INTERNET_IP}:{PORT}", count=3),
                    },
                    "drives": [],
                    "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
                    "network-interfaces": [
                        {"iface_id": "eth0", "host_dev_name": tap, "guest_mac": vm_if["mac"]}
                    ],
                }
            )
        )
        sink = UdpSink(lab.sb.internet, INTERNET_IP, PORT)  # type: ignore[attr-defined]
        try:
            probe = lab.firecracker("ctr1", netns=netns, config_file=config).wait()
            got = sink.datagrams()
        finally:
            sink.stop()
        address = ip["address"].split("/")[0]
        ident = probe.fields("mac=")
        assert ident["mac"].lower() == vm_if["mac"].lower() and ident["mac_source"] == "device"
        assert (ident["ip"], ident["gw"]) == (address, ip["gateway"]), probe
        assert probe.ok("ping gw"), probe
        assert [src for src, *_ in got] == [HOST_UPLINK_IP] * 3, got
        print(f"CNI: {boot_args}; {probe.line('ping gw')}; {len(got)} datagrams via NAT")
        assert rt.call("DEL", container="ctr1", netns=netns).rc == 0
        assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []
    finally:
        rt.close()
