"""kernel/uplink6.py's plan part: accept_ra=2 goes right before IPv6 forwarding, with its undo
(the kernel tests, tests/kernel/test_uplink6.py, run it in namespaces)."""

from fireroute.kernel import uplink6
from fireroute.plan.steps import IP, SYSCTL, Step


def test_accept_ra_goes_right_before_ipv6_forwarding_and_is_undone_to_1():
    steps = [
        Step(IP, "tuntap add dev fr-a mode tap", "create tap"),
        Step(SYSCTL, "net.ipv4.ip_forward=1", "set IPv4 forwarding"),
        Step(SYSCTL, "net.ipv6.conf.all.forwarding=1", "set IPv6 forwarding"),
        Step("nft", "add table ip6 fireroute", "nft"),
    ]
    got = uplink6.first(steps, "eth0.7")
    assert [s.text for s in got] == [
        "tuntap add dev fr-a mode tap",
        "net.ipv4.ip_forward=1",
        "net/ipv6/conf/eth0.7/accept_ra=2",  # (the slash form: a name may hold dots)
        "net.ipv6.conf.all.forwarding=1",
        "add table ip6 fireroute",
    ]
    added = got[2]
    assert added.tool == SYSCTL and added.netns is None
    assert [(u.tool, u.text) for u in added.undo] == [(SYSCTL, "net/ipv6/conf/eth0.7/accept_ra=1")]
    assert 'uplink "eth0.7"' in added.what


def test_no_forwarding_step_no_accept_ra():
    """Forwarding on already (or a plan setting it back): nothing added."""
    steps = [
        Step(SYSCTL, "net.ipv6.conf.all.forwarding=0", "restore IPv6 forwarding"),
        Step(SYSCTL, "net.ipv6.conf.all.forwarding=1", "in a namespace", netns="other"),
    ]
    assert uplink6.first(steps, "eth0") == steps
