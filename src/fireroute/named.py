"""Addresses a request names, or an IPAM plugin returns, judged against the whole host: what
the pool allocator's blocks are checked against (kernel/observe.py's probe), and more, since
a named address can be anything. Pure: the facts come from kernel/lookup.py and the leases
(this state file's, and every other's through fireroute's kernel objects), read by the
manager.

How each address is judged, by how the host will reach it:

- ``ROUTED`` (a CNI guest's address from IPAM, a clone address): the host routes it to the
  VM's own link. It must be in no route of the host but the default one, no address of the
  host, not the host's router, not a neighbour, no VM's.
- ``GATEWAY`` (the gateway IPAM gives a CNI guest): the host puts it on the VM's link, as a
  /32 every attachment of that subnet shares. The same, except that it may already be an
  address of another fireroute link (that shared gateway).
- ``ON_LINK`` (a bridge guest's address): the guest sits in the bridge's subnet, reached
  on-link through the bridge, so the route that carries it is the bridge's own (or, for an
  unaddressed bridge, none but the default): it must be no address of the host, not its
  router, not a neighbour (another machine on the LAN), no VM's.

What a request names and the checks do not cover, on purpose: a bridge guest's ``gateway``
(its router: an address on the LAN that exists, the host's or a neighbour's, by design),
``dns`` servers (often the LAN's router), and a clone's guest address (inside the clone's
own namespace, never seen by the host).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from fireroute import owner

ROUTED, GATEWAY, ON_LINK = "routed", "gateway", "on-link"


class Named:
    """One address to judge: ``what`` it is (for the message), for which ``vm``, how the host
    will reach it (``kind``), and the MAC the guest will have (a neighbour entry with that MAC
    is this guest, met before: a bridge VM coming back at its address)."""

    __slots__ = ("what", "ip", "kind", "vm", "mac")

    def __init__(self, what: str, ip: IPv4Address, kind: str, vm: str, mac: str = "") -> None:
        self.what, self.ip, self.kind, self.vm, self.mac = what, ip, kind, vm, mac.upper()

    def refused(self, why: str) -> str:
        return f'{self.what} {self.ip} for vm "{self.vm}" {why}'


def _vm_of(alias: str) -> str | None:
    parsed = owner.parse(alias) if alias.startswith(owner.PREFIX) else None
    return parsed[1] if parsed else None


def verdict(
    n: Named,
    route: dict[str, str] | None,
    router: str | None,
    aliases: dict[str, str],
    neighbour: tuple[str, str] | None,
    bridge: str | None = None,
) -> str | None:
    """Why the host cannot give ``n`` to the VM (one line), or None. ``route`` is the FIB
    entry that carries the address (``ip -j route get fibmatch``), ``router`` the default
    route's gateway, ``aliases`` the links' aliases (fireroute's links carry its owner tag),
    ``neighbour`` (link, MAC) of a live neighbour entry on a link that is not fireroute's,
    ``bridge`` the bridge of an ``ON_LINK`` guest."""
    if router is not None and str(n.ip) == router:
        return n.refused("is the host's default router: the host could not reach it any more")
    if neighbour is not None and neighbour[1] != n.mac:
        return n.refused(
            f'is a neighbour of the host on "{neighbour[0]}" (MAC {neighbour[1]}): another '
            "machine answers at that address"
        )
    if route is None or route.get("dst") == "default":
        return None
    dev = route.get("dev", "")
    vm = _vm_of(aliases.get(dev, "")) if dev else None
    if route.get("type") == "local":
        if n.kind == GATEWAY and aliases.get(dev, "").startswith(owner.PREFIX):
            return None  # the gateway other attachments of its subnet share
        where = f'vm "{vm}"\'s link "{dev}"' if vm else f'"{dev}"'
        return n.refused(f"is an address of the host (on {where})")
    if n.kind == ON_LINK and dev and dev == bridge:
        return None  # on-link through the guest's own bridge
    if vm is not None:
        return n.refused(f'is routed to vm "{vm}" (link "{dev}"): it is that vm\'s')
    kind = route.get("type", "unicast")
    desc = " ".join(
        x
        for x in (
            kind if kind != "unicast" else "",
            route.get("dst", ""),
            f"dev {dev}" if dev else "",
        )
        if x
    )
    return n.refused(
        f"is inside the host's route {desc} (table {route.get('table', 'main')}): the host "
        "sends its packets there"
    )
