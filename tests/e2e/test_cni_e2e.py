"""A booted guest on a CNI attachment: the plugin is called as a runtime calls it, and the
guest boots the way firecracker-go-sdk starts one from the result: the VMM inside CNI_NETNS on
the tap the result names, with the result's MAC, and the kernel ``ip=`` argument built from
the result's one IP entry (``client::gateway:mask:::off:dns0:dns1:``). The guest reaches
its gateway and, through NAT, the internet namespace (which sees only the host's uplink
address); the host reaches the guest; after the VM stops and DEL runs, nothing of it is left
on either side."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from fireroute.lab.guest import GuestImage
from fireroute.lab.sandbox import HOST_UPLINK_IP, Sandbox
from fireroute.lab.vmm import start_guest
from tests.cni.runtime import Runtime, leftovers, state_vms
from tests.conftest import Host, sh
from tests.e2e.common import E2E_MARKS
from tests.e2e.test_modes_e2e import CLIENT, LISTEN, fetch_ok

pytestmark = E2E_MARKS


@pytest.fixture
def rt() -> Iterator[Runtime]:
    with tempfile.TemporaryDirectory() as tmp, Sandbox(prefix="frcni") as sb:
        sb.start_http()
        r = Runtime(Host(sb.host, sb.internet, Path(tmp) / "state.db"))
        try:
            yield r
        finally:
            r.close()


def vm_interface(result: dict, container: str) -> tuple[dict, dict]:
    """(the VM interface, its one IP) as firecracker-go-sdk's cni/vmconf finds them: the one
    interface whose sandbox is the container id, and the one IP entry pointing at it."""
    ifs = result["interfaces"]
    (vm_if,) = [i for i in ifs if i.get("sandbox") == container]
    (ip,) = [ip for ip in result["ips"] if ifs[ip["interface"]] is vm_if]
    return vm_if, ip


def go_sdk_ip_arg(result: dict, container: str) -> str:
    """The ``ip=`` argument as cni/vmconf builds it: client, no server, gateway, mask, no
    hostname, no device (the VM's only one), autoconf off, two name servers, no NTP."""
    _, ip = vm_interface(result, container)
    iface = IPv4Interface(ip["address"])
    dns = (result.get("dns", {}).get("nameservers", []) + ["", ""])[:2]
    return f"ip={iface.ip}::{ip['gateway']}:{iface.netmask}:::off:{dns[0]}:{dns[1]}:"


def test_a_guest_boots_on_the_result_and_del_leaves_nothing(
    image: GuestImage, rt: Runtime, tmp_path: Path
):
    ns_path = rt.netns("vm1")
    result = rt.add("vm1ctr", ns_path)
    vm_if, ip = vm_interface(result, "vm1ctr")
    tap = next(
        i["name"]
        for i in result["interfaces"]
        if i["name"] == vm_if["name"] and i.get("sandbox") == ns_path
    )
    guest_ip = ip["address"].split("/")[0]
    guest = start_guest(
        image,
        netns=ns_path.rsplit("/", 1)[1],
        tap=tap,
        mac=vm_if["mac"],
        boot_args=go_sdk_ip_arg(result, "vm1ctr"),
        name="cni-guest",
        log_path=tmp_path / "guest.log",
    )
    try:
        status, out = guest.run(f"ping -c 1 -W 5 {ip['gateway']}", timeout=20)
        assert status == 0, out
        assert f"client={HOST_UPLINK_IP}" in fetch_ok(guest)  # masqueraded to the uplink
        status, out = guest.run(LISTEN.format(name="cni"), timeout=20)
        assert status == 0, out
        p = rt.host.run(sys.executable, "-c", CLIENT, guest_ip, check=False)
        assert p.returncode == 0 and p.stdout.strip() == "hello-from-cni", p.stderr
        assert rt.call("CHECK", container="vm1ctr", netns=ns_path).rc == 0
    finally:
        guest.stop()
    d = rt.call("DEL", container="vm1ctr", netns=ns_path)
    assert d.rc == 0, d.doc
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []
    assert set(rt.ns_links(ns_path)) == {"lo"}


def test_a_guest_on_an_address_from_host_local(image: GuestImage, rt: Runtime, tmp_path: Path):
    """The same with the address delegated to Debian's host-local IPAM plugin: the guest has a
    /24 and the gateway .1, which the host veth holds as a /32."""
    conf = rt.config(
        cniVersion="1.0.0",
        ipam={"type": "host-local", "subnet": "10.78.0.0/24", "dataDir": str(tmp_path / "ipam")},
    )
    ns_path = rt.netns("vm2")
    result = rt.add("vm2ctr", ns_path, conf=conf)
    vm_if, ip = vm_interface(result, "vm2ctr")
    assert ip["address"] == "10.78.0.2/24" and ip["gateway"] == "10.78.0.1"
    guest = start_guest(
        image,
        netns=ns_path.rsplit("/", 1)[1],
        tap="tap0",
        mac=vm_if["mac"],
        boot_args=go_sdk_ip_arg(result, "vm2ctr"),
        name="cni-ipam-guest",
        log_path=tmp_path / "guest.log",
    )
    try:
        status, out = guest.run("ping -c 1 -W 5 10.78.0.1", timeout=20)
        assert status == 0, out
        assert f"client={HOST_UPLINK_IP}" in fetch_ok(guest)
        status, out = guest.run(LISTEN.format(name="ipam"), timeout=20)
        assert status == 0, out
        p = rt.host.run(sys.executable, "-c", CLIENT, "10.78.0.2", check=False)
        assert p.returncode == 0 and p.stdout.strip() == "hello-from-ipam", p.stderr
    finally:
        guest.stop()
    assert rt.call("DEL", conf=conf, container="vm2ctr", netns=ns_path).rc == 0
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []


def test_two_attachments_in_one_namespace_each_carry_their_guest(
    image: GuestImage, rt: Runtime, tmp_path: Path
):
    """A namespace with two attachments (two networks, their own ifname and tap), a guest on
    each: both reach their gateway and the internet, the host reaches both; DEL of the first
    (its guest stopped) leaves the second reachable."""
    ns_path = rt.netns("pod")
    confs = [rt.config(), rt.config(name="second", tapName="tap1")]
    results = [
        rt.add("podctr", ns_path, conf=confs[0], ifname="eth0"),
        rt.add("podctr", ns_path, conf=confs[1], ifname="eth1"),
    ]
    guests = []
    try:
        for n, (result, tap) in enumerate(zip(results, ("tap0", "tap1"), strict=True)):
            vm_if, _ip = vm_interface(result, "podctr")
            guests.append(
                start_guest(
                    image,
                    netns=ns_path.rsplit("/", 1)[1],
                    tap=tap,
                    mac=vm_if["mac"],
                    boot_args=go_sdk_ip_arg(result, "podctr"),
                    name=f"cni-pod-guest{n}",
                    log_path=tmp_path / f"guest{n}.log",
                )
            )
        for n, (guest, result) in enumerate(zip(guests, results, strict=True)):
            _vm_if, ip = vm_interface(result, "podctr")
            status, out = guest.run(f"ping -c 1 -W 5 {ip['gateway']}", timeout=20)
            assert status == 0, out
            assert f"client={HOST_UPLINK_IP}" in fetch_ok(guest)
            status, out = guest.run(LISTEN.format(name=f"pod{n}"), timeout=20)
            assert status == 0, out
            guest_ip = ip["address"].split("/")[0]
            p = rt.host.run(sys.executable, "-c", CLIENT, guest_ip, check=False)
            assert p.returncode == 0 and p.stdout.strip() == f"hello-from-pod{n}", p.stderr
        guests.pop(0).stop()
        assert rt.call("DEL", conf=confs[0], container="podctr", netns=ns_path,
                       ifname="eth0").rc == 0  # fmt: skip
        assert set(rt.ns_links(ns_path)) == {"lo", "eth1", "tap1"}
        _vm_if, ip = vm_interface(results[1], "podctr")
        status, out = guests[0].run(f"ping -c 1 -W 5 {ip['gateway']}", timeout=20)
        assert status == 0, out
        status, out = guests[0].run(LISTEN.format(name="after"), timeout=20)
        assert status == 0, out
        p = rt.host.run(sys.executable, "-c", CLIENT, ip["address"].split("/")[0], check=False)
        assert p.returncode == 0 and p.stdout.strip() == "hello-from-after", p.stderr
        assert rt.call("CHECK", conf=confs[1], container="podctr", netns=ns_path,
                       ifname="eth1").rc == 0  # fmt: skip
    finally:
        for guest in guests:
            guest.stop()
    assert rt.call("DEL", conf=confs[1], container="podctr", netns=ns_path, ifname="eth1").rc == 0
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []


def test_a_dual_stack_guest_boots_on_the_result_and_reaches_the_internet_over_nat66(
    image: GuestImage, rt: Runtime, tmp_path: Path
):
    """``"ipv6": true``: the go SDK's reading of the result is unchanged (one IPv4 entry on the
    VM's interface, its ``ip=``); the IPv6 address is the entry on the namespace's veth. The
    guest, configured with it as fireroute's guest script says, pings its gateway fe80::1 and
    reaches the internet's IPv6 address masqueraded out of the uplink's; CHECK is clean with
    the guest running; DEL leaves nothing (no ip6 table either)."""
    from tests.kernel.test_isolation6 import INTERNET6, SERVER, UPLINK6

    h = rt.host
    h.run("ip", "-6", "addr", "add", f"{UPLINK6}/64", "dev", "up0", "nodad")
    h.run("ip", "-6", "route", "add", "default", "via", INTERNET6, "dev", "up0")
    sh("ip", "-n", h.inet, "-6", "addr", "add", f"{INTERNET6}/64", "dev", "down0", "nodad")
    argv = ["ip", "netns", "exec", h.inet, sys.executable, "-c", SERVER, f"[{INTERNET6}]:8080"]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    conf = rt.config(cniVersion="1.0.0", ipv6=True)
    ns_path = rt.netns("vm6")
    result = rt.add("vm6ctr", ns_path, conf=conf)
    vm_if, _ip = vm_interface(result, "vm6ctr")  # (exactly one IP there, as the SDK needs)
    ifs = result["interfaces"]
    (six,) = [i for i in result["ips"] if ":" in i["address"]]
    assert ifs[six["interface"]]["name"] == "veth0" and six["gateway"] == "fe80::1"
    guest = start_guest(
        image,
        netns=ns_path.rsplit("/", 1)[1],
        tap="tap0",
        mac=vm_if["mac"],
        boot_args=go_sdk_ip_arg(result, "vm6ctr"),
        name="cni-dual-guest",
        log_path=tmp_path / "guest.log",
    )
    try:
        script = (
            "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad && "
            f"ip -6 addr add {six['address']} dev eth0 && "
            "ip -6 route add default via fe80::1 dev eth0"
        )
        status, out = guest.run(script, timeout=20)
        assert status == 0, out
        status, out = guest.run("ping -c 1 -W 5 fe80::1%eth0", timeout=20)
        assert status == 0, out
        for _ in range(3):
            status, out = guest.run(f"nc -w 3 {INTERNET6} 8080 </dev/null", timeout=20)
            if status == 0 and out.strip():
                break
        assert out.strip() == f"hello {UPLINK6}", out  # NAT66: the uplink's address
        assert fetch_ok(guest)  # IPv4 as before
        checked = rt.call("CHECK", conf=conf, container="vm6ctr", netns=ns_path)
        assert checked.rc == 0, checked.doc
    finally:
        guest.stop()
        server.kill()
        server.wait()
    assert rt.call("DEL", conf=conf, container="vm6ctr", netns=ns_path).rc == 0
    assert leftovers(rt.host) == [] and state_vms(rt.host.state) == []
    assert "ip6" not in h.nft_text()
