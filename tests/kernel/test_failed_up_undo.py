"""A failed ``up``'s undo takes back only what that up added, on the kernel (the property test
on the fake found both: tests/unit/test_property_fake.py): the NAT table another state file's
VM holds stays, and a bridge's egress element goes back only when this up added it. Each
beside its control: the same up without the fault works."""

from __future__ import annotations

import pytest

from tests.conftest import Host

pytestmark = pytest.mark.privileged

BRIDGED = ["--mode", "bridge", "--masquerade", "--bridge", "brb"]
BRIDGED += ["--bridge-address", "192.168.51.1/24", "--range", "192.168.51.10-192.168.51.99"]
EGRESS = ["brb", "up0"]
RANGE = ["--range", "192.168.51.100-192.168.51.120"]  # (another state file's guests)
FAULT = "FIREROUTE_FAULT"


def other(host: Host, *args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    """``fireroute ARGS`` on a second state file beside the host's."""
    state = str(host.state.with_name("other.db"))
    return host.fireroute(*args, check=False, env={"FIREROUTE_STATE": state, **(env or {})})


def egress(host: Host) -> list:
    """The bridge's egress elements (the NAT VMs' are there too)."""
    out = host.set_elements("firecracker", "egress")
    return [e for e in out if isinstance(e, dict) and e.get("concat", [""])[0] == "brb"]


def test_a_failed_up_keeps_the_table_another_state_file_holds(host: Host):
    host.fireroute("up", "b1", "--pool", "172.17.0.0/16")
    before = host.nft_text()
    p = other(host, "up", "a1", "--pool", "172.16.0.0/16", env={FAULT: "fail@3"})
    assert p.returncode == 1 and "injected fault" in p.stderr, p.stderr
    assert other(host, "ls", "--json").stdout.strip() == "[]"
    assert "fr-a1" not in host.links()
    assert "table ip firecracker" in host.nft_text() and "fr-a1" not in host.nft_text()
    assert "fr-b1" in host.nft_text()
    assert host.fireroute("check", check=False).returncode == 0
    # the control: the same up without the fault works, and both VMs' entries are there
    assert other(host, "up", "a1", "--pool", "172.16.0.0/16").returncode == 0
    text = host.nft_text()
    assert "fr-a1" in text and "fr-b1" in text and text != before
    assert host.fireroute("check", check=False).returncode == 0
    assert other(host, "check").returncode == 0


def test_a_failed_bridge_up_takes_back_its_bridges_egress_element(host: Host):
    host.fireroute("up", "b2", "--pool", "172.17.0.0/16")
    p = host.fireroute("up", "b1", *BRIDGED, env={FAULT: "fail@1"}, check=False)
    assert p.returncode == 1 and "injected fault" in p.stderr, p.stderr
    assert egress(host) == []
    p = host.fireroute("check", check=False)
    assert p.returncode == 0, p.stdout
    # the control: without the fault the element is made
    host.fireroute("up", "b1", *BRIDGED)
    assert egress(host) == [{"concat": EGRESS}]


def test_a_failed_bridge_up_leaves_the_element_another_guest_added(host: Host):
    host.fireroute("up", "b1", *BRIDGED)
    assert egress(host) == [{"concat": EGRESS}]
    p = host.fireroute("up", "b2", *BRIDGED, env={FAULT: "fail@1"}, check=False)
    assert p.returncode == 1 and "injected fault" in p.stderr, p.stderr
    assert egress(host) == [{"concat": EGRESS}]
    p = host.fireroute("check", check=False)
    assert p.returncode == 0, p.stdout


def test_a_failed_bridge_up_leaves_the_element_another_state_file_added(host: Host):
    host.fireroute("up", "b1", *BRIDGED)
    assert egress(host) == [{"concat": EGRESS}]
    p = other(host, "up", "a1", *BRIDGED, *RANGE, env={FAULT: "fail@1"})
    assert p.returncode == 1 and "injected fault" in p.stderr, p.stderr
    assert egress(host) == [{"concat": EGRESS}]
    assert host.fireroute("check", check=False).returncode == 0
    # the control: without the fault the other state file's guest joins, both check clean
    p = other(host, "up", "a1", *BRIDGED, *RANGE)
    assert p.returncode == 0, p.stderr
    assert host.fireroute("check", check=False).returncode == 0
    assert other(host, "check").returncode == 0


def test_the_last_guest_of_one_state_file_leaves_the_element_another_uses(host: Host):
    host.fireroute("up", "b1", *BRIDGED)
    p = other(host, "up", "a1", *BRIDGED, *RANGE)
    assert p.returncode == 0, p.stderr
    assert other(host, "down", "a1").returncode == 0
    assert egress(host) == [{"concat": EGRESS}]
    assert host.fireroute("check", check=False).returncode == 0
    # and the other way round: the first state file's guest goes, the other's keeps it
    assert other(host, "up", "a1", *BRIDGED, *RANGE).returncode == 0
    host.fireroute("down", "b1")
    assert egress(host) == [{"concat": EGRESS}]
    assert other(host, "check").returncode == 0
    # the control: with the last guest of all the element goes
    assert other(host, "down", "a1").returncode == 0
    assert egress(host) == []
