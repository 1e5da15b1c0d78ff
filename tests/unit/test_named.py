"""fireroute/named.py: how an address a request names is judged from what the host holds at
it. Each refusal beside the same address accepted where the host holds nothing there."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from fireroute import named

LAN = {"dst": "203.0.113.0/24", "dev": "up0", "type": "unicast", "table": "main"}
DEFAULT = {"dst": "default", "dev": "up0", "gateway": "203.0.113.1", "type": "unicast"}
ALIASES = {"up0": "", "brl": "", "fr-b1": "fireroute:0a1b2c3d:b1", "br-f": "fireroute:0a:bridge:x"}


def judge(
    kind: str, ip: str, route: dict | None, neighbour=None, bridge=None, mac=""
) -> str | None:
    n = named.Named("IPAM address", IPv4Address(ip), kind, "c1", mac)
    return named.verdict(n, route, "203.0.113.1", ALIASES, neighbour, bridge)


@pytest.mark.parametrize("kind", [named.ROUTED, named.GATEWAY, named.ON_LINK])
def test_the_default_route_alone_is_free_for_every_kind(kind: str):
    assert judge(kind, "192.0.2.77", DEFAULT) is None
    assert judge(kind, "192.0.2.77", None) is None


@pytest.mark.parametrize("kind", [named.ROUTED, named.GATEWAY, named.ON_LINK])
def test_the_router_and_a_neighbour_are_refused_for_every_kind(kind: str):
    why = judge(kind, "203.0.113.1", LAN)
    assert why is not None and "default router" in why and '"c1"' in why
    why = judge(kind, "192.0.2.99", DEFAULT, ("up0", "02:00:00:00:00:99"))
    assert (
        why is not None and 'neighbour of the host on "up0"' in why and "02:00:00:00:00:99" in why
    )


def test_a_neighbour_with_the_guests_own_mac_is_that_guest():
    mac = "06:00:0A:32:00:1E"
    route = {"dst": "10.50.0.0/24", "dev": "brl", "type": "unicast"}
    assert judge(named.ON_LINK, "10.50.0.30", route, ("brl", mac), "brl", mac.lower()) is None
    assert judge(named.ON_LINK, "10.50.0.30", route, ("brl", "02:00:00:00:00:01"), "brl", mac)


def test_a_host_route_refuses_routed_addresses_and_on_link_ones_elsewhere():
    assert "inside the host's route 203.0.113.0/24 dev up0" in str(
        judge(named.ROUTED, "203.0.113.9", LAN)
    )
    assert judge(named.ON_LINK, "203.0.113.9", LAN, bridge="brl") is not None  # not its bridge
    on_brl = {**LAN, "dev": "brl"}
    assert judge(named.ON_LINK, "203.0.113.9", on_brl, bridge="brl") is None  # on-link there
    assert judge(named.ROUTED, "203.0.113.9", on_brl) is not None
    blackhole = {"dst": "198.51.100.0/24", "type": "blackhole", "table": "main"}
    assert "blackhole 198.51.100.0/24" in str(judge(named.ON_LINK, "198.51.100.9", blackhole))


def test_host_addresses_are_refused_but_a_shared_gateway_on_a_link_of_ours():
    local = {"dst": "203.0.113.2", "dev": "up0", "type": "local", "table": "local"}
    for kind in (named.ROUTED, named.GATEWAY, named.ON_LINK):
        assert 'an address of the host (on "up0")' in str(judge(kind, "203.0.113.2", local))
    ours = {"dst": "10.77.0.1", "dev": "fr-b1", "type": "local", "table": "local"}
    assert judge(named.GATEWAY, "10.77.0.1", ours) is None  # the gateway attachments share
    assert 'vm "b1"' in str(judge(named.ROUTED, "10.77.0.1", ours))  # but not as a guest


def test_a_route_to_a_link_of_ours_names_its_vm():
    to_b1 = {"dst": "172.17.0.0/30", "dev": "fr-b1", "type": "unicast", "table": "main"}
    for kind in (named.ROUTED, named.GATEWAY, named.ON_LINK):
        why = judge(kind, "172.17.0.2", to_b1, bridge="brl")
        assert why is not None and 'routed to vm "b1"' in why
