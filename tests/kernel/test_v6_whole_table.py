"""An ip6 table declared whole on the kernel (found by the stateful property test on the
fake, tests/unit/test_property_fake.py): state file B's VM made the NAT table (with IPv6,
the ip6 one too); A's first VM with IPv6 finds a table there (AlreadyExists) and declares
it whole, every part (want/tables.py PARTS; the ip6 table too, while it made it, before
manager.py ``_up_retry`` made a missing one exclusively). Check then called the ip6 table's
parts its VMs did not need (the egress and publish sets and chains) not fireroute's:
want/render.py ``held`` read the ip table's parts only."""

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
    assert ("out_jump" in ip6_table(host)) == b_ipv6  # (B's: declared whole; else A's, lean)
    for env in (None, b):
        p = host.fireroute("check", check=False, env=env)
        assert p.returncode == 0, p.stdout
    assert "nothing to do" in host.fireroute("restore").stdout
    assert ("out_jump" in ip6_table(host)) == b_ipv6
    host.fireroute("down", "b1", env=b)
    p = host.fireroute("check", check=False)
    assert p.returncode == 0, p.stdout


def test_the_control_a_v6_vm_alone_makes_its_tables_lean_and_checks_clean(host: Host):
    host.fireroute("up", "a1", "--pool", "172.16.0.0/16", "--ipv6")
    assert "chain forward" in ip6_table(host) and "out_jump" not in ip6_table(host)
    p = host.fireroute("check", check=False)
    assert p.returncode == 0, p.stdout


def test_a_failed_v6_up_beside_another_state_files_table_leaves_no_ip6_table(host: Host, tmp_path):
    """The ip table is B's; A's first VM with IPv6 finds it (AlreadyExists), and fails at
    each later step in turn: no ip6 table is left (it made it; declared whole on the retry,
    its undo left it: manager.py ``_up_retry`` makes it exclusively now), IPv6 forwarding as
    it was, B's check clean. The control: the same up without a fault has the ip6 table."""
    b = {"FIREROUTE_STATE": str(tmp_path / "B.db")}
    host.fireroute("up", "b1", "--pool", "172.17.0.0/16", env=b)
    failed = 0
    for k in range(1, 9):
        p = host.fireroute("up", "a1", "--ipv6", check=False, env={"FIREROUTE_FAULT": f"fail@{k}"})
        if p.returncode == 0:  # (fewer than k steps: up; the control, below)
            break
        failed += 1
        assert "injected fault" in p.stderr, p.stderr
        assert not ip6_table(host), k
        assert host.sh("cat /proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "0", k
        assert host.fireroute("check", check=False, env=b).returncode == 0, k
        assert host.fireroute("ls", "--json").stdout.strip() == "[]", k
    assert failed >= 3
    if p.returncode != 0:
        host.fireroute("up", "a1", "--ipv6")
    assert "chain forward" in ip6_table(host)
