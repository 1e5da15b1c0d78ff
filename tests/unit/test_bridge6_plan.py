"""Bridge guests with IPv6 up and down through the manager on the fake kernel (issue 24 step
15): the plans as golden files (a v4-only guest makes the bridge, the first guest with IPv6
on it brings the guests' gateway fe80::1 and the ip6 table, a second adds its route and
elements only; one of them down, then the last: the gateway, the ip6 table and IPv6
forwarding go, the bridge stays with the v4-only guest), and what the fake holds after each."""

from __future__ import annotations

import pytest

from fireroute import allocate
from fireroute.model import Options
from fireroute.plan.steps import as_commands
from tests.unit.test_plan import golden
from tests.unit.test_up_down_v6 import TABLE6, V6, host  # noqa: F401 (the fixture)

BRIDGE = dict(mode="bridge", bridge_address="192.168.6.1/24")
GATEWAY6 = ("addr", (None, "br0", "fe80::1/64"))


@pytest.fixture(autouse=True)
def _no_collision(monkeypatch: pytest.MonkeyPatch) -> None:
    """A named guest address is free (the fake answers no neighbour reads: test_named_addresses
    has the collisions)."""
    monkeypatch.setattr(allocate, "_collision", lambda *args: None)


def guest(n: int, v6: bool = True) -> Options:
    return Options(**BRIDGE, guest=f"192.168.6.{n}/24", **(V6 if v6 else {}))


def _scenario(host) -> tuple[str, str, object]:  # noqa: F811
    m, fake = host()
    ups, seen = [], []
    for title, name, options in [
        ("a v4-only guest makes the bridge", "four", guest(20, v6=False)),
        ("the first guest with IPv6 on it", "a", guest(21)),
        ("a second guest with IPv6", "b", guest(22)),
    ]:
        res = m.up([name], options)
        ups.append(f"## {title}: {name}\n{as_commands(res.plan)}")
        seen.append(GATEWAY6 in fake.objs)
    downs = []
    for title, name in [("a guest with IPv6, another stays", "b"), ("the last one", "a")]:
        _, plan = m.down([name])
        downs.append(f"## {title}: {name}\n{as_commands(plan)}")
        seen.append(GATEWAY6 in fake.objs)
    return "".join(ups), "".join(downs), (seen, fake)


def test_up_of_bridge_guests_with_ipv6_golden(host):  # noqa: F811
    golden("up-bridge-ipv6.txt", _scenario(host)[0])


def test_down_of_bridge_guests_with_ipv6_golden(host):  # noqa: F811
    golden("down-bridge-ipv6.txt", _scenario(host)[1])


def test_the_bridges_gateway_follows_its_guests_with_ipv6(host):  # noqa: F811
    """fe80::1 on the bridge from the first guest with IPv6 (the bridge already there) to
    the last; the routes of the guests' /64s with each; the ip6 table with the last."""
    _, _, (seen, fake) = _scenario(host)
    assert seen == [False, True, True, True, False]
    assert TABLE6 not in fake.objs and fake.forwarding6 != "1"
    assert not [k for k in fake.objs if k[0] == "route" and ":" in k[1][1]]
    assert ("link", (None, "br0")) in fake.objs  # the v4-only guest keeps its bridge


def test_the_ra_responder_advertises_to_bridge_guests_at_layer_2():
    """A bridge guest with IPv6 is advertised to, as a bridge guest (its RA written onto its
    tap, advertise_bridge.py); a NAT VM with IPv6 on its own tap; a VM without IPv6 not."""
    from fireroute.advertise import advertised, bridged
    from fireroute.model import Vm

    block = next(iter(V6["pool6"].subnets(new_prefix=64)))
    guest6 = Vm("a", None, "fr-a", "", "eth0", guest(21), net6=block)
    nat = Vm("n", None, "fr-n", "", "eth0", Options(**V6), net6=block)
    four = Vm("f", None, "fr-f", "", "eth0", Options())
    assert advertised(guest6) and bridged(guest6)
    assert advertised(nat) and not bridged(nat) and not advertised(four)
