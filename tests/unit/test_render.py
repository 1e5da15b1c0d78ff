import json
from ipaddress import IPv4Address, IPv4Network

from fireroute.model import Options, Vm
from fireroute.render import firecracker, guest


def vm(**kw) -> Vm:
    opts = Options(**kw)
    return Vm("web-1", IPv4Network("172.16.0.0/30"), "tap0", "06:00:AC:10:00:02", "eth0", opts)


def test_boot_arg_is_the_guides():
    assert guest.boot_arg(vm()) == "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"


def test_boot_arg_with_dns_and_iface():
    v = vm(dns=(IPv4Address("10.0.0.53"), IPv4Address("10.0.0.54")), guest_iface="ens3")
    assert guest.boot_arg(v) == (
        "ip=172.16.0.2::172.16.0.1:255.255.255.252::ens3:off:10.0.0.53:10.0.0.54"
    )


def test_guest_script():
    script = guest.guest_script(vm(dns=(IPv4Address("10.0.0.53"),)))
    assert script.splitlines()[:3] == [
        "ip addr add 172.16.0.2/30 dev eth0",
        "ip link set eth0 up",
        "ip route add default via 172.16.0.1 dev eth0",
    ]
    assert "nameserver 10.0.0.53" in script


def test_firecracker_renders():
    v = vm()
    body = {"iface_id": "eth0", "guest_mac": "06:00:AC:10:00:02", "host_dev_name": "tap0"}
    assert firecracker.interface(v) == body
    assert firecracker.config_fragment(v) == {"network-interfaces": [body]}
    assert firecracker.firectl_flag(v) == "--tap-device=tap0/06:00:AC:10:00:02"
    call = firecracker.api_call(v, "/run/fc.sock")
    assert "PUT 'http://localhost/network-interfaces/eth0'" in call
    payload = call.split("-d '", 1)[1].rsplit("'", 1)[0]
    assert json.loads(payload) == body
