"""Pure renders for the Firecracker integration: snapshot overrides, jailer args, MMDS route."""

from ipaddress import IPv4Network

from fireroute.model import Options, Owner, Vm
from fireroute.render import firecracker, guest


def vm(**kw) -> Vm:
    opts = Options(**kw)
    return Vm("web-1", IPv4Network("172.16.0.4/30"), "fr-web-1", "06:00:AC:10:00:06", "eth0", opts)


def test_snapshot_overrides_is_the_specs_network_override():
    assert firecracker.snapshot_overrides(vm()) == {
        "network_overrides": [{"iface_id": "eth0", "host_dev_name": "fr-web-1"}]
    }
    assert firecracker.snapshot_overrides(vm(iface_id="net1"))["network_overrides"][0] == {
        "iface_id": "net1",
        "host_dev_name": "fr-web-1",
    }
    custom = firecracker.snapshot_overrides(vm(), iface_id="old_if")
    assert custom["network_overrides"][0]["iface_id"] == "old_if"


def test_jailer_args_follow_the_tap_owner():
    args, notes = firecracker.jailer_args(vm(owner=Owner(1000, 1001)))
    assert args == ["--uid", "1000", "--gid", "1001"]
    assert "--netns" not in args
    assert any("host network namespace" in n and "--netns" in n for n in notes)
    assert any("uid 1000, group 1001" in n for n in notes)


def test_jailer_args_uid_only():
    args, notes = firecracker.jailer_args(vm(owner=Owner(123)))
    assert args == ["--uid", "123"]
    assert any("any --gid" in n for n in notes)


def test_jailer_args_without_owner_explains_why_there_are_none():
    args, notes = firecracker.jailer_args(vm())
    assert args == []
    assert any("owned by root" in n and "--owner UID:GID" in n for n in notes)


def test_guest_script_unchanged_without_mmds():
    assert guest.guest_script(vm()) == (
        "ip addr add 172.16.0.6/30 dev eth0\n"
        "ip link set eth0 up\n"
        "ip route add default via 172.16.0.5 dev eth0\n"
    )


def test_guest_script_mmds_route_is_the_guides():
    # mmds-user-guide.md: ip route add ${MMDS_IPV4_ADDR} dev ${MMDS_NET_IF}
    lines = guest.guest_script(vm(guest_iface="ens3"), mmds_address="169.254.170.2").splitlines()
    assert lines[-1] == "ip route add 169.254.170.2 dev ens3"
    assert lines.index("ip link set ens3 up") < lines.index(lines[-1])
