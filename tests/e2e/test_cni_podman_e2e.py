"""fireroute's CNI plugin driven by a real runtime: Debian's podman (its CNI backend, through
tests/cni/podman.py), with Debian's ``tuning``, ``portmap``, ``firewall`` and ``bandwidth``
chained after fireroute in the conflist. podman calls VERSION, ADD with its CNI_ARGS, caches
the result and calls DEL; a guest then boots in the namespace podman made, from podman's
cached result, as a VMM started by firecracker-containerd would; after ``podman rm`` nothing
is left. A configuration fireroute refuses fails ``podman run`` with fireroute's message and
leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fireroute.lab.guest import GuestImage
from fireroute.lab.sandbox import HOST_UPLINK_IP, Sandbox
from fireroute.lab.vmm import start_guest
from tests.cni.podman import Podman
from tests.cni.runtime import LAUNCHER, leftovers, state_vms
from tests.conftest import Host, sh
from tests.e2e.common import E2E_MARKS
from tests.e2e.test_cni_e2e import go_sdk_ip_arg, vm_interface
from tests.e2e.test_modes_e2e import CLIENT, LISTEN, fetch_ok

pytestmark = E2E_MARKS


@dataclass
class Lab:
    host: Host
    pm: Podman
    conf: dict

    def netns_of(self, container: str) -> str:
        """The container's network namespace as a path this process can open: podman's own
        path lives in the harness's mount namespace, so find a process inside it."""
        key = self.pm.inspect(container)["NetworkSettings"]["SandboxKey"]
        inode = self.pm.host("stat", "-L", "-c", "%i", key, check=True).stdout.strip()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink(f"/proc/{pid}/ns/net") == f"net:[{inode}]":
                    return f"/proc/{pid}/ns/net"
            except OSError:
                continue
        raise AssertionError(f"no process in {key}")


def conflist(state: Path, name: str = "frfc", **fireroute: object) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "fireroute", "state": str(state), "tapName": "tap0", **fireroute},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": "iptables"},
            {
                "type": "bandwidth",
                "ingressRate": 10**9,
                "ingressBurst": 10**7,
                "egressRate": 10**9,
                "egressBurst": 10**7,
            },  # fmt: skip
        ],
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/install.sh --test installs it)")
    tmp = tmp_path_factory.mktemp("cni-podman")
    plugins = tmp / "plugins"
    plugins.mkdir()
    (plugins / "fireroute").symlink_to(LAUNCHER)  # what install.sh puts in /opt/cni/bin
    conf = conflist(tmp / "state.db")
    with Sandbox(prefix="frpodfr") as sb:
        sb.start_http()
        with Podman(f"/var/run/netns/{sb.host}", conf, [plugins, "/usr/lib/cni"]) as pm:
            yield Lab(Host(sb.host, sb.internet, tmp / "state.db"), pm, conf)


def dnat_rules(lab: Lab) -> list[str]:
    out = lab.host.run("iptables-nft-save", "-t", "nat").stdout
    return [r for r in out.splitlines() if r.startswith("-A") and "DNAT" in r]


def test_podman_drives_the_plugin_chained_and_a_guest_boots_on_it(
    lab: Lab, image: GuestImage, tmp_path: Path
):
    lab.pm.start("vm1", args=["-p", "8081:8080"])
    try:
        info = lab.pm.inspect("vm1")
        (cached,) = lab.pm.cached_results()
        result = json.loads(cached.read_text())["result"]
        vm_if, ip = vm_interface(result, info["Id"])
        guest_ip = ip["address"].split("/")[0]
        assert info["NetworkSettings"]["Networks"]["frfc"]["IPAddress"] == guest_ip
        # the attachment is a VM of the state file, with podman's container id
        ls = lab.host.fireroute("ls").stdout
        assert info["Id"] in ls and "eth0" in ls
        # check reads podman's namespace by its path, which only podman's mounts show
        check = lab.pm.host("env", f"FIREROUTE_STATE={lab.host.state}", str(LAUNCHER), "check")
        assert check.returncode == 0, check.stdout + check.stderr
        # from outside those mounts, check says it cannot see it, and gc keeps it
        out = lab.host.fireroute("check", check=False)
        assert out.returncode == 1 and "cannot be opened from here" in out.stdout, out.stdout
        lab.host.fireroute("gc")
        assert len(state_vms(lab.host.state)) == 1
        ns = lab.netns_of("vm1")
        # tuning ran after fireroute, on the interface fireroute made
        arp = lab.host.run(
            "nsenter", f"--net={ns}", "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore"
        )
        assert arp.stdout.strip() == "1"
        # portmap read fireroute's result (its prevResult) and mapped the port to the guest
        assert any(f"{guest_ip}:8080" in r for r in dnat_rules(lab)), dnat_rules(lab)
        # and so did firewall: its chain lets the guest's address through
        forward = lab.host.run("iptables-nft-save", "-t", "filter").stdout
        assert f"{guest_ip}/32" in forward, forward
        # and bandwidth, which found the host veth as the namespace veth's peer in the result
        host_dev = result["interfaces"][0]["name"]
        assert "tbf" in lab.host.run("tc", "qdisc", "show", "dev", host_dev).stdout

        guest = start_guest(
            image,
            netns=ns,
            tap="tap0",
            mac=vm_if["mac"],
            boot_args=go_sdk_ip_arg(result, info["Id"]),
            name="podman-guest",
            log_path=tmp_path / "guest.log",
        )
        try:
            assert f"client={HOST_UPLINK_IP}" in fetch_ok(guest)
            status, out = guest.run(LISTEN.format(name="podman"), timeout=20)
            assert status == 0, out
            # from the internet namespace through portmap's mapping: fireroute's isolation
            # lets a DNAT'd connection to a guest through (and nothing else from outside)
            p = sh("ip", "netns", "exec", lab.host.inet, sys.executable, "-c",
                   CLIENT.replace("8080", "8081"), HOST_UPLINK_IP, check=False)  # fmt: skip
            assert p.stdout.strip() == "hello-from-podman", p.stderr
        finally:
            guest.stop()
    finally:
        lab.pm.rm("vm1")
    assert leftovers(lab.host) == [] and state_vms(lab.host.state) == []
    assert lab.pm.cached_results() == []
    # portmap's DEL took the guest's mapping (its shared jump rules stay, as portmap keeps them)
    assert not any(guest_ip in r for r in dnat_rules(lab)), dnat_rules(lab)
    assert f"{guest_ip}/32" not in lab.host.run("iptables-nft-save", "-t", "filter").stdout
    links = lab.host.run("ip", "-o", "link", "show").stdout
    assert "bwp" not in links, links  # bandwidth's ifb for the egress limit went with DEL


def test_podman_run_rm_adds_and_deletes(lab: Lab):
    res = lab.pm.run("sh", "-c", "ip -o link show eth0 && ip -o link show tap0")
    assert res.returncode == 0, res.stderr
    assert "eth0" in res.stdout and "tap0" in res.stdout
    assert leftovers(lab.host) == [] and state_vms(lab.host.state) == []
    assert lab.pm.cached_results() == []


def test_a_refused_configuration_fails_podman_run_and_leaves_nothing(lab: Lab):
    bad = conflist(lab.host.state, name="frbad", blockSize=31)
    lab.pm.add_network(bad)
    try:
        res = lab.pm.run("true", network="frbad")
    finally:
        (lab.pm.dir / "net.d" / "frbad.conflist").unlink()
    assert res.returncode != 0 and "block size /31" in res.stderr, res.stderr
    assert leftovers(lab.host) == [] and state_vms(lab.host.state) == []
    assert lab.pm.cached_results() == []


def test_podman_runs_a_dual_stack_attachment(lab: Lab):
    """``"ipv6": true`` through podman's CNI backend, with the same chain after fireroute: podman
    shows the IPv6 address (the entry on the namespace's veth) beside the IPv4 one, its cached
    result keeps the VM's interface at one IPv4 entry (what the go SDK reads), fireroute's check
    (from podman's mounts) is clean, and ``podman rm`` leaves nothing, no ip6 table either."""
    dual = conflist(lab.host.state, name="frv6", ipv6=True)
    lab.pm.add_network(dual)
    try:
        lab.pm.start("vm6", network="frv6")
        try:
            info = lab.pm.inspect("vm6")
            (cached,) = lab.pm.cached_results()
            result = json.loads(cached.read_text())["result"]
            _vm_if, ip = vm_interface(result, info["Id"])  # (one IP: the IPv4 one)
            ifs = result["interfaces"]
            (six,) = [i for i in result["ips"] if ":" in i["address"]]
            assert ifs[six["interface"]]["name"] == "eth0" and six["gateway"] == "fe80::1"
            shown = info["NetworkSettings"]["Networks"]["frv6"]
            assert shown["IPAddress"] == ip["address"].split("/")[0]
            assert shown["GlobalIPv6Address"] == six["address"].split("/")[0], shown
            assert "ip6 firecracker" in lab.host.nft_text()
            env = f"FIREROUTE_STATE={lab.host.state}"
            check = lab.pm.host("env", env, str(LAUNCHER), "check")
            assert check.returncode == 0, check.stdout + check.stderr
        finally:
            lab.pm.rm("vm6")
    finally:
        (lab.pm.dir / "net.d" / "frv6.conflist").unlink()
    assert leftovers(lab.host) == [] and state_vms(lab.host.state) == []
    assert lab.pm.cached_results() == [] and "ip6 firecracker" not in lab.host.nft_text()
