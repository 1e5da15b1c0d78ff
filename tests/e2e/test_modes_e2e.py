"""End to end for the bridge and clone modes, with booted guests.

Clone: two guests with the identical guest IP, MAC and tap name, each in its own clone
namespace made by ``fireroute up --mode clone``, run at the same time; both fetch a page from
the "internet" namespace (which has no route back, so the reply can only come through the
clone's SNAT and the host's masquerade), and the host reaches each through its own clone
address. Bridge: two guests on one bridge fireroute made reach each other, the host, and the
internet (with ``--masquerade``). Every guest configures itself only from the ``ip=`` argument
fireroute rendered. Nothing touches the root network namespace.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fireroute.lab.guest import GuestImage
from fireroute.lab.sandbox import HOST_UPLINK_IP, INTERNET_IP, Sandbox
from fireroute.lab.vmm import Guest, start_guest
from tests.e2e.common import E2E_MARKS

pytestmark = E2E_MARKS

HTTP_FETCH = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 " + f"{INTERNET_IP} 80"
LISTEN = (
    "(echo hello-from-{name} | nc -l -p 8080) >/dev/null 2>&1 & "
    "for i in 1 2 3 4 5 6 7 8 9 10; do netstat -ltn | grep -q ':8080 ' && exit 0; "
    "sleep 0.2; done; exit 1"
)
CLIENT = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], 8080), timeout=5)\n"
    "sys.stdout.write(s.makefile().readline())\n"
)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with tempfile.TemporaryDirectory() as tmp, Sandbox(prefix="frmode") as sb:
        sb.state = Path(tmp) / "state.db"
        sb.start_http()
        try:
            yield sb
        finally:
            sb.fireroute("teardown", check=False)


def up(sb: Sandbox, *args: str) -> dict:
    p = sb.fireroute("up", *args, "--json", check=False)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)[0]


def boot_all(image: GuestImage, specs: list[tuple[str, str, dict]], logs: Path) -> list[Guest]:
    """Boot (netns, name, record) guests in parallel on the taps fireroute made."""

    def boot(spec: tuple[str, str, dict]) -> Guest:
        netns, name, rec = spec
        return start_guest(
            image,
            netns=netns,
            tap=rec["tap"],
            mac=rec["mac"],
            boot_args=rec["boot_args"],
            name=name,
            log_path=logs / f"{name}.log",
        )

    with ThreadPoolExecutor(len(specs)) as pool:
        futures = [pool.submit(boot, s) for s in specs]
        guests = []
        errors = []
        for f in futures:
            try:
                guests.append(f.result())
            except Exception as exc:  # stop the ones that did boot, then fail
                errors.append(exc)
    if errors:
        for g in guests:
            g.stop()
        raise errors[0]
    return guests


def fetch_ok(guest: Guest) -> str:
    for _ in range(3):
        status, out = guest.run(HTTP_FETCH, timeout=20)
        if status == 0 and "hello-from-internet" in out:
            return out
    raise AssertionError(f"{guest.name}: fetch failed: {out}")


def host_connect(sb: Sandbox, address: str) -> str:
    p = sb.exec(sb.host, sys.executable, "-c", CLIENT, address, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_two_clones_same_ip_and_mac_at_once(image: GuestImage, sandbox: Sandbox, tmp_path: Path):
    sb = sandbox
    c1 = up(sb, "clone-1", "--mode", "clone")
    c2 = up(sb, "clone-2", "--mode", "clone", "--clone-address", "172.31.0.9")
    assert (c1["guest_ip"], c1["mac"], c1["tap"]) == (c2["guest_ip"], c2["mac"], c2["tap"])
    guests = boot_all(image, [(c1["netns"], "clone-1", c1), (c2["netns"], "clone-2", c2)], tmp_path)
    try:
        for g, rec in zip(guests, (c1, c2), strict=True):
            status, out = g.run(f"ping -c1 -W3 {rec['tap_ip']}")
            assert status == 0, f"{g.name}: gateway: {out}"
            page = fetch_ok(g)
            assert f"client={HOST_UPLINK_IP}" in page  # SNAT in the clone, masquerade on host
            status, out = g.run(LISTEN.format(name=g.name))
            assert status == 0, out
        # the host reaches each clone through its own address, though both guests share one IP
        assert host_connect(sb, c1["clone_address"]) == "hello-from-clone-1"
        assert host_connect(sb, c2["clone_address"]) == "hello-from-clone-2"
        # negative control: without the clone's host-side NAT entries its egress fails
        sb.exec(
            sb.host,
            "nft",
            f'delete element ip firecracker masq {{ {c1["veth"]["netns_ip"]} . "up0" }}',
        )
        status, out = guests[0].run(HTTP_FETCH, timeout=20)
        assert "hello-from-internet" not in out
        fetch_ok(guests[1])  # the other clone is unaffected
    finally:
        for g in guests:
            g.stop()
    sb.fireroute("down", "clone-1", "clone-2")
    assert not os.path.exists(f"/var/run/netns/{c1['netns']}")


def test_two_guests_on_one_bridge(image: GuestImage, sandbox: Sandbox, tmp_path: Path):
    sb = sandbox
    common = ["--mode", "bridge", "--bridge-address", "192.168.77.1/24", "--masquerade"]
    b1 = up(sb, "br-1", *common, "--range", "192.168.77.10-192.168.77.20")
    b2 = up(sb, "br-2", *common, "--range", "192.168.77.10-192.168.77.20")
    assert (b1["guest_ip"], b2["guest_ip"]) == ("192.168.77.10", "192.168.77.11")
    guests = boot_all(image, [(sb.host, "br-1", b1), (sb.host, "br-2", b2)], tmp_path)
    try:
        g1, g2 = guests
        status, out = g1.run(f"ping -c1 -W3 {b2['guest_ip']}")
        assert status == 0, f"guest to guest over the bridge: {out}"
        status, out = g2.run("ping -c1 -W3 192.168.77.1")
        assert status == 0, f"guest to bridge address: {out}"
        for g in guests:
            assert f"client={HOST_UPLINK_IP}" in fetch_ok(g)
            status, out = g.run(LISTEN.format(name=g.name))
            assert status == 0, out
        assert host_connect(sb, b1["guest_ip"]) == "hello-from-br-1"
        assert host_connect(sb, b2["guest_ip"]) == "hello-from-br-2"
    finally:
        for g in guests:
            g.stop()
    sb.fireroute("down", "br-1", "br-2")
    links = sb.exec(sb.host, "ip", "-o", "link").stdout
    assert "br0" not in links and "fr-br-1" not in links


def test_bridge_guest_configured_by_dhcp(image: GuestImage, sandbox: Sandbox, tmp_path: Path):
    """--dhcp renders ip=:::::eth0:dhcp; the guest's ipconfig then asks a DHCP server on the
    bridge (busybox udhcpd in the host namespace) for its address and router."""
    import subprocess

    sb = sandbox
    rec = up(sb, "dh-1", "--mode", "bridge", "--bridge-address", "192.168.88.1/24", "--dhcp")
    assert rec["boot_args"] == "ip=:::::eth0:dhcp" and rec["guest_ip"] is None
    conf = tmp_path / "udhcpd.conf"
    conf.write_text(
        "interface br0\nstart 192.168.88.100\nend 192.168.88.120\n"
        f"lease_file {tmp_path / 'leases'}\npidfile {tmp_path / 'udhcpd.pid'}\n"
        "option subnet 255.255.255.0\noption router 192.168.88.1\n"
    )
    (tmp_path / "leases").touch()
    server = subprocess.Popen(
        ["ip", "netns", "exec", sb.host, "busybox", "udhcpd", "-f", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        (guest,) = boot_all(image, [(sb.host, "dh-1", rec)], tmp_path)
        try:
            status, out = guest.run("ip -4 -o addr show dev eth0; ip route show default")
            assert status == 0 and "inet 192.168.88." in out, out
            leased = out.split("inet ", 1)[1].split("/", 1)[0]
            assert 100 <= int(leased.rsplit(".", 1)[1]) <= 120, out
            assert "default via 192.168.88.1" in out, out
            status, out = guest.run("ping -c1 -W3 192.168.88.1")
            assert status == 0, out
            status, out = guest.run(LISTEN.format(name="dh-1"))
            assert status == 0, out
            assert host_connect(sb, leased) == "hello-from-dh-1"
        finally:
            guest.stop()
    finally:
        server.kill()
        server.wait()
