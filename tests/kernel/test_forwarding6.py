"""IPv6 forwarding goes back with the last VM with IPv6 of any state file, whatever else of
fireroute's has IPv6 on: a clone's veth or a bridge port (IPv6 on, no VM of IPv6) kept it on
for ever once the state file that switched it on had gone (found by the stateful property
test). The control: while another state file's VM with IPv6 is up, it stays on."""

from __future__ import annotations

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


def other(host: Host, *args: str):  # noqa: ANN201
    state = str(host.state.with_name("other.db"))
    return host.fireroute(*args, env={"FIREROUTE_STATE": state})


def forwarding6(host: Host) -> str:
    return host.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip()


@pytest.mark.parametrize("kind", [["--mode", "clone"], ["--mode", "bridge", "--dhcp"]])
def test_the_last_v6_vm_sets_it_back_beside_a_clone_or_a_bridge_guest(host: Host, kind):
    assert forwarding6(host) == "0"
    host.fireroute("up", "b1", "--ipv6")
    other(host, "up", "a1", *kind)
    assert forwarding6(host) == "1"
    host.fireroute("teardown")
    assert forwarding6(host) == "0"  # (a1's link has IPv6 on, but a1 has no IPv6)
    other(host, "teardown")
    assert forwarding6(host) == "0"


def test_it_stays_while_another_state_files_v6_vm_is_up(host: Host):
    host.fireroute("up", "b1", "--ipv6")
    other(host, "up", "a1", "--ipv6", "--pool", "172.17.0.0/16")
    host.fireroute("down", "b1")
    assert forwarding6(host) == "1"  # a1 has IPv6
    other(host, "down", "a1")
    assert forwarding6(host) == "0"


@pytest.mark.parametrize("gateway_too", [False, True])
def test_it_stays_while_a_v6_vms_tap_has_its_gateway_though_addr_gen_mode_changed(
    host: Host, gateway_too: bool
):
    """The other state file's v6 tap with addr_gen_mode set back to 0 behind fireroute's back
    is still a v6 VM's tap by its gateway (fe80::1:…/64, want/tap.py ``v6_tap``, as the reader
    says): forwarding stays. The control: without its gateway too, it is not, and forwarding
    goes back."""
    host.fireroute("up", "b1", "--ipv6")
    other(host, "up", "a1", "--ipv6", "--pool", "172.17.0.0/16")
    host.sh("echo 0 > /proc/sys/net/ipv6/conf/fr-a1/addr_gen_mode")
    if gateway_too:
        host.run("ip", "-6", "address", "flush", "dev", "fr-a1", "scope", "link")
    host.fireroute("down", "b1")
    assert forwarding6(host) == ("0" if gateway_too else "1")
