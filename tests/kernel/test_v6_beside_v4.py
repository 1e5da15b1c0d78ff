"""A first VM with IPv6 in a state file that already has a v4 VM in the NAT table (found by
the kernel property test, tests/reliability/test_property.py): state file B's VM with IPv6
made the ip6 table; A's ip table is its own (not made again), its ip6 one is new to it, made
exclusively, and is B's. Both tables' transactions run in one nft process: its one error
must be told as the ip6 step's (exclusive: AlreadyExists, the retry declares B's table),
not the ip step's (a plain KernelError, the up refused)."""

from __future__ import annotations

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


def ip6_table(host: Host) -> str:
    return host.run("nft", "list", "table", "ip6", "firecracker", check=False).stdout


@pytest.mark.parametrize("b_ipv6", [True, False])
def test_a_first_v6_vm_beside_its_own_v4_vm_and_another_files_ip6_table(
    host: Host, tmp_path, b_ipv6
):
    """b_ipv6=False is the control: the ip6 table is A's own to make, no retry."""
    b = {"FIREROUTE_STATE": str(tmp_path / "B.db")}
    host.fireroute("up", "b1", "--pool", "172.17.0.0/16", *(["--ipv6"] * b_ipv6), env=b)
    host.fireroute("up", "a1", "--pool", "172.16.0.0/16")
    p = host.fireroute("up", "a3", "--pool", "172.16.0.0/16", "--ipv6", check=False)
    assert p.returncode == 0, p.stderr
    assert "chain forward" in ip6_table(host)
    for env in (None, b):
        p = host.fireroute("check", check=False, env=env)
        assert p.returncode == 0, p.stdout
    host.fireroute("down", "a3")
    assert ("chain forward" in ip6_table(host)) == b_ipv6  # (B's stays; A's own goes)
    for env in (None, b):
        p = host.fireroute("check", check=False, env=env)
        assert p.returncode == 0, p.stdout
