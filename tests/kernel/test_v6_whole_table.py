"""An ip6 table declared whole on the kernel (found by the stateful property test on the
fake, tests/unit/test_property_fake.py): state file B's VM made the NAT table (with IPv6,
the ip6 one too); A's first VM with IPv6 finds a table there (AlreadyExists) and declares
both whole, every part (want/tables.py PARTS). Check then called the ip6 table's parts its
VMs did not need (the egress and publish sets and chains) not fireroute's: want/render.py
``held`` read the ip table's parts only."""

from __future__ import annotations

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged


def ip6_table(host: Host) -> str:
    return host.run("nft", "list", "table", "ip6", "firecracker", check=False).stdout


@pytest.mark.parametrize("b_ipv6", [False, True])
def test_a_v6_vm_beside_another_state_files_tables_checks_clean(host: Host, tmp_path, b_ipv6):
    b = {"FIREROUTE_STATE": str(tmp_path / "B.db")}  # (A: the host's, Host.fireroute's)
    host.fireroute("up", "b1", "--pool", "172.17.0.0/16", *(["--ipv6"] * b_ipv6), env=b)
    host.fireroute("up", "a1", "--pool", "172.16.0.0/16", "--ipv6")
    assert "out_jump" in ip6_table(host)  # (declared whole)
    for env in (None, b):
        p = host.fireroute("check", check=False, env=env)
        assert p.returncode == 0, p.stdout
    assert "nothing to do" in host.fireroute("restore").stdout
    assert "out_jump" in ip6_table(host)
    host.fireroute("down", "b1", env=b)
    p = host.fireroute("check", check=False)
    assert p.returncode == 0, p.stdout


def test_the_control_a_v6_vm_alone_makes_its_tables_lean_and_checks_clean(host: Host):
    host.fireroute("up", "a1", "--pool", "172.16.0.0/16", "--ipv6")
    assert "chain forward" in ip6_table(host) and "out_jump" not in ip6_table(host)
    p = host.fireroute("check", check=False)
    assert p.returncode == 0, p.stdout
