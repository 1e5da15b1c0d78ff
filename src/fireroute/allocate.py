"""Admission and allocation for up: the addresses, devices and host ports new VMs get, and
the checks that refuse a request before anything changes (this state file's leases, other
state files' elements in our tables, what the host holds). They read the kernel through
``runner`` and change nothing there; only an adopted bridge's address is written into the
options. manager.py calls them with what they need: the store, the runner, the options
(``new_vms`` and ``check_new``: up's allocation and its last checks, in the order it runs them)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Network

from fireroute import addressing, owner
from fireroute.errors import ConflictError, PoolExhausted, UsageError
from fireroute.kernel import observe
from fireroute.kernel.run import which
from fireroute.model import DEFAULT_CNI_TAP, Vm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fireroute import named
    from fireroute.kernel.run import Runner
    from fireroute.model import Options
    from fireroute.state.store import Store
    from fireroute.want.shared import Population


def networks(
    store: Store,
    runner: Runner,
    names: list[str],
    options: Options,
    skip_conflicts: bool,
) -> tuple[list[IPv4Network | None], observe.HostView]:
    """Blocks from the pool (nat: the VM's /30; clone: its veth link's /30), checked
    against host routes; or, in bridge mode, the guest's own address (a /32 lease)."""
    look = [str(options.bridge)] if options.mode == "bridge" else []
    if options.uplink is not None and options.uplink not in look:
        look.append(options.uplink)
    if options.mode == "cni" and options.guest is not None:  # an address from IPAM
        view = observe.probe(options.uplink, [], store.is_tap, runner, links=look)
        _check_uplink(view, options)
        from fireroute import named

        ip = IPv4Interface(options.guest).ip
        check_named(store, runner, options, view.uplink, [
            named.Named("IPAM address", ip, named.ROUTED, names[0]),
            named.Named("IPAM gateway", IPv4Address(options.gateway), named.GATEWAY, names[0]),
        ])  # fmt: skip
        return [IPv4Network(f"{ip}/32")], view
    if options.mode == "bridge":
        from fireroute import validate

        view = observe.probe(options.uplink, [], store.is_tap, runner, links=look)
        _check_uplink(view, options)
        if view.links.get(str(options.bridge)) is not None:
            _adopt_bridge(runner, str(options.bridge), options)
        elif options.bridge_address:  # before its guests: their subnet is the bridge's
            _check_new_bridge(store, runner, options, view.uplink)
        validate.bridge_complete(options)
        return _bridge_guests(store, runner, names, options, view.uplink, skip_conflicts), view
    pool = options.pool
    lo, hi = int(pool.network_address), int(pool.broadcast_address)
    size = addressing.block_size(options.prefix)
    start = (store.first_free(lo, hi) - lo) // size  # the first block that may be free
    taken = store.taken_from(lo + start * size, hi)
    uplink = options.uplink
    while True:
        ordinals = addressing.free_ordinals(options.pool, options.prefix, taken, len(names), start)
        blocks = [addressing.block(options.pool, options.prefix, o) for o in ordinals]
        view = observe.probe(uplink, blocks, store.is_tap, runner, links=look)
        _check_uplink(view, options)
        uplink = view.uplink
        if not view.conflicts:
            return list(blocks), view
        if not skip_conflicts:
            b, what = next(iter(view.conflicts.items()))
            raise ConflictError(
                f'block {b} for vm "{names[blocks.index(b)]}" overlaps {what} on this '
                "host; choose another --pool or pass --skip-conflicts"
            )
        taken = sorted(
            taken + [(int(b.network_address), int(b.broadcast_address)) for b in view.conflicts]
        )


def networks6(store: Store, count: int, options: Options) -> list[IPv6Network]:
    """``count`` /64 blocks of the v6 pool (``--pool6``, or the state file's own: made if it
    has none, recorded by the reservation), the lowest free ones among this state file's v6
    leases (a freed block is taken again first), from the pool's free6_from mark; the
    reservation records the first of them as the new mark."""
    pool, prefix = options.pool6 or store.own_pool6(), options.prefix6
    lo, hi = int(pool.network_address), int(pool.broadcast_address)
    size = addressing.block_size(prefix, 128)
    start = (store.free6_from(lo) - lo) // size  # below it, no block is free
    taken = store.taken6_from(lo + start * size, hi)
    ordinals = addressing.free_ordinals(pool, prefix, taken, count, start)
    store.mark6(lo, lo + ordinals[0] * size)  # the lowest free: safe if this up stops short
    return [addressing.block6(pool, o, prefix) for o in ordinals]


def _bridge_guests(
    store: Store, runner: Runner, names: list[str], options: Options, uplink: str, skip: bool
) -> list[IPv4Network | None]:
    """The guests' addresses (given, or from the range), each checked against the host
    and every lease; with ``skip`` (--skip-conflicts), a range's address that collides is
    passed over, as the pool allocator passes over a block."""
    from fireroute import named

    taken, judged = store.taken(), {}
    while True:
        nets = _bridge_addresses(names, options, taken)
        for name, net in zip(names, nets, strict=True):
            if net is None:
                continue
            ip = net.network_address
            mac = options.mac or addressing.mac_for_vm(name, ip)
            n = named.Named("guest address", ip, named.ON_LINK, name, mac)
            if (name, ip) not in judged:  # each address once, however many are passed over
                judged[(name, ip)] = _collision(store, runner, options, uplink, n)
            why = judged[(name, ip)]
            if why is not None and (not skip or options.guest is not None):
                raise ConflictError(why)
            if why is not None:
                taken.append((int(ip), int(ip)))
                break
        else:
            return nets


def _bridge_addresses(
    names: list[str], options: Options, taken: list[tuple[int, int]]
) -> list[IPv4Network | None]:
    if options.dhcp:
        return [None] * len(names)
    used = {s for s, e in taken if s == e}
    blocks = [(s, e) for s, e in taken if s != e]  # NAT and clone blocks: /30s and wider

    def leased(a: int) -> bool:
        return a in used or any(s <= a <= e for s, e in blocks)

    if options.guest is not None:
        ip = IPv4Interface(options.guest).ip
        if len(names) > 1:
            raise UsageError(
                "--guest-ip names one address: it cannot be used with several vms (use --range)"
            )
        if leased(int(ip)):
            raise ConflictError(f"guest address {ip} is already leased to another vm")
        return [IPv4Network(f"{ip}/32")]
    first, last = options.range_bounds()
    reserved = {int(IPv4Interface(options.bridge_address).ip)} if options.bridge_address else set()
    if options.gateway:
        reserved.add(int(IPv4Address(options.gateway)))
    out: list[IPv4Network | None] = []
    for a in range(int(first), int(last) + 1):
        if not leased(a) and a not in reserved:
            out.append(IPv4Network(f"{IPv4Address(a)}/32"))
            if len(out) == len(names):
                return out
    raise PoolExhausted(
        f"range {options.addr_range} is exhausted: {len(names)} address(es) wanted, {len(out)} free"
    )


def check_ports(store: Store, runner: Runner, name: str, publish: tuple) -> None:
    """A host port (per address and protocol) is one VM's: held by a VM of this state
    file (its recorded options), or by anyone's element in a table of ours (another state
    file's VMs): exact lookups in the kernel's maps, and a read of the address-bound map
    (small: most ports are published on every address), so the cost does not grow with
    the number of VMs."""
    if not publish:
        return
    held: dict[tuple[str | None, int, str], str] = {}
    for vm in store.claiming([p.port for p in publish]):
        if vm.name != name:
            held.update({p.claim: f'vm "{vm.name}"' for p in vm.options.publish})
    _check_claims(publish, held)
    if not which("nft"):
        return
    from fireroute.kernel.nftnl import Nftnl

    mine = f"{store.instance()}:{name}"
    channel = Nftnl()
    try:
        for table in observe.nft_our_tables(runner):
            kernel: dict[tuple[str | None, int, str], str] = {}
            for p in publish:
                got = channel.comment_of("ip", table, "pub_any", [p.proto, str(p.port)])
                if got is not None and got != mine:
                    kernel[(None, p.port, p.proto)] = got
            for (addr, proto, port), comment in channel.keys_of("ip", table, "pub_addr"):
                if comment != mine:
                    kernel[(addr, int(port), proto)] = comment
            _check_claims(publish, {
                k: f'vm "{owner.parse(c)[1]}"' if owner.parse(c) else "a foreign element"  # type: ignore[index]
                for k, c in kernel.items()
            })  # fmt: skip
    finally:
        channel.close()


def _check_claims(publish: tuple, held: dict[tuple[str | None, int, str], str]) -> None:
    for p in publish:
        for (addr, port, proto), who in held.items():
            same = (port, proto) == (p.port, p.proto)
            if same and (addr is None or p.addr is None or addr == p.addr):
                at = "" if not addr else f"[{addr}]:" if ":" in addr else f"{addr}:"
                raise ConflictError(
                    f'--publish "{p}": host port {at}{port}/{proto} is published by {who}'
                )


def check_unique(store: Store, runner: Runner, names: list[str], options: Options) -> None:
    """What must be unique among every VM of the state file, whatever its mode."""
    if options.publish:
        if len(names) > 1:
            raise UsageError("--publish names host ports of one vm: give one vm name")
        check_ports(store, runner, names[0], options.publish)
    if options.mac is not None and options.mode != "clone":
        holder = store.mac_owner(options.mac)
        if holder is not None:
            raise ConflictError(
                f'MAC {options.mac} for vm "{names[0]}" is already vm "{holder}"\'s'
            )
    if options.mode == "cni":  # attachments sharing a namespace: their names there
        _check_namespace(names[0], options, store.in_netns(str(options.netns)))
    ca = options.clone_address
    if options.mode == "clone" and ca not in (None, "auto"):
        for vm in store.all():
            if vm.mode == "clone" and str(vm.clone_address) == ca:
                raise ConflictError(
                    f'clone address {ca} for vm "{names[0]}" is already vm "{vm.name}"\'s'
                )
            if vm.net is not None and vm.net.overlaps(IPv4Network(f"{ca}/32")):
                raise ConflictError(
                    f'clone address {ca} for vm "{names[0]}" is in the block {vm.net} '
                    f'of vm "{vm.name}"'
                )


def _check_namespace(name: str, options: Options, others: list[Vm]) -> None:
    """Several attachments may share a namespace (a VM with two NICs, a pod on two networks)
    when each has its own names there: the veth (ifname) and the tap (tapName) of ``name``
    must be no other attachment's, or ConflictError names the attachment that has it."""
    mine = {str(options.ifname): "ifname", options.tap or DEFAULT_CNI_TAP: '"tapName"'}
    for vm in others:
        if vm.name == name or vm.mode != "cni":
            continue
        theirs = {str(vm.options.ifname): "veth", vm.vm_tap: "tap"}
        for dev, key in mine.items():
            if dev in theirs:
                o = vm.options
                raise ConflictError(
                    f'network namespace "{options.netns}" already has "{dev}": the '
                    f'{theirs[dev]} of vm "{vm.name}" (network "{o.network}", container '
                    f'"{o.container}", ifname "{o.ifname}"); give this attachment another {key}'
                )


def check_named(
    store: Store, runner: Runner, options: Options, uplink: str, wanted: list[named.Named]
) -> None:
    """Addresses a request names, or IPAM returned: ConflictError for the first that
    collides with a lease (of any state file) or with what the host holds."""
    for n in wanted:
        why = _collision(store, runner, options, uplink, n)
        if why is not None:
            raise ConflictError(why)


def _collision(
    store: Store, runner: Runner, options: Options, uplink: str, n: named.Named
) -> str | None:
    """Why ``n`` cannot be given (one line), or None. This state file's leases by an exact
    lookup in the state file; another state file's as the kernel has them: the routes of
    their links (nat, clone, cni: in the FIB entry read next) and, for a bridge guest or a
    masqueraded one (no route of its own), the elements of the table's ``bridged`` and
    ``masq`` sets, by exact lookups. Then the host: the FIB entry that carries the
    address, the default router, the neighbour entry for it (kernel/lookup.py)."""
    from fireroute import named
    from fireroute.kernel import lookup

    ip = int(n.ip)
    if store.taken_from(ip, ip):
        holder = next(  # which vm: read only on this path, the refusal
            (v.name for v in store.all() if v.net is not None and n.ip in v.net), "?"
        )
        return n.refused(f'is in the lease of vm "{holder}" of this state file')
    bridge = str(options.bridge) if n.kind == named.ON_LINK else None
    comment = _element_owner(options.table, uplink, n.ip, bridge)
    if comment is not None:
        who = owner.parse(comment)
        whose = f'vm "{who[1]}" of another state file' if who else "a foreign element"
        return n.refused(f"is the address of {whose} (in table {options.table})")
    links = [uplink] + ([bridge] if bridge else [])
    facts = lookup.read(n.ip, links, owner.PREFIX, runner)
    return named.verdict(n, facts.route, facts.router, facts.aliases, facts.neighbour, bridge)


def _element_owner(table: str, uplink: str, ip: IPv4Address, bridge: str | None) -> str | None:
    """The comment (owner tag) of a guest's element for ``ip`` in the ``masq`` set (with
    this uplink) or, for a bridge guest, the ``bridged`` set (on this bridge) of our
    table: two exact lookups, whatever the number of VMs. None when there is none."""
    from fireroute.kernel.nftnl import Nftnl, Unsupported

    keys = [("masq", [str(ip), f'"{uplink}"'])]
    if bridge is not None:
        keys.append(("bridged", [f'"{bridge}"', str(ip)]))
    channel = Nftnl()
    try:
        for name, fields in keys:
            got = channel.comment_of("ip", table, name, fields)
            if got is not None:
                return got
    except (OSError, Unsupported):  # no nf_tables here: nothing of anyone's in it
        return None
    finally:
        channel.close()
    return None


def _check_new_bridge(store: Store, runner: Runner, options: Options, uplink: str) -> None:
    """The address of a bridge fireroute is about to make must not be one the host
    already has or routes somewhere (the default route aside)."""
    ip = IPv4Interface(str(options.bridge_address)).ip
    found = observe.probe(uplink, [IPv4Network(f"{ip}/32")], store.is_tap, runner)
    if found.conflicts:
        what = next(iter(found.conflicts.values()))
        raise ConflictError(f"--bridge-address {ip} overlaps {what} on this host")


def _adopt_bridge(runner: Runner, name: str, options: Options) -> None:
    """A bridge that exists is never re-addressed: its address is the guests' prefix and
    gateway when --bridge-address is not given, and a --bridge-address it does not have
    while it has others (a gateway that would exist nowhere) is refused."""
    doc = observe.ip_batch_json([f"addr show dev {name}"], runner)[0]
    have = [
        f"{a['local']}/{a['prefixlen']}"
        for link in (doc if isinstance(doc, list) else [])
        if isinstance(link, dict)
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    ]
    if have and options.bridge_address is None:
        options.bridge_address = have[0]
    elif have and options.bridge_address not in have:
        raise ConflictError(
            f'bridge "{name}" exists with address {", ".join(have)}: --bridge-address '
            f"{options.bridge_address} contradicts it (fireroute never re-addresses a bridge "
            "it did not create)"
        )


def _check_uplink(view: observe.HostView, options: Options) -> None:
    """An explicit uplink must be a real link of the host, not ours, not a guest's."""
    name = view.uplink
    link = view.links.get(name)
    if options.uplink is None or link is None:
        return
    info = link.get("linkinfo", {}) or {}
    why = None
    if "LOOPBACK" in link.get("flags", []):
        why = "the loopback interface"
    elif str(link.get("ifalias", "")).startswith(owner.PREFIX):
        why = "a link fireroute made for a vm"
    elif info.get("info_kind") == "tun":
        why = "a tap (a guest's link)"
    elif name == options.bridge:
        why = "the guests' bridge"
    elif link.get("master"):
        why = f'a port of bridge "{link["master"]}"'
    if why:
        raise UsageError(f'invalid --uplink "{name}": it is {why}, not the host\'s way out')


def devices(store: Store, names: list[str], options: Options) -> dict[str, str]:
    """The host device per VM: its tap, or (clone, cni) the host end of its veth link."""
    taps: dict[str, str] = {}
    for n in names:
        if options.tap and options.mode not in ("clone", "cni"):
            tap = options.tap
        else:  # a generated name is unique within the state file, however many VMs
            name_of = (
                addressing.cni_dev_name if options.mode == "cni" else addressing.default_tap_name
            )
            attempt, tap = 0, name_of(n)
            while store.tap_owner(tap) is not None or tap in taps.values():
                attempt += 1
                tap = name_of(n, attempt)
        holder = store.tap_owner(tap)
        if holder is not None or tap in taps.values():
            raise ConflictError(
                f'tap "{tap}" for vm "{n}" is already used by vm "{holder or n}"; pass --tap'
            )
        taps[n] = tap
    return taps


def new_vms(
    store: Store,
    runner: Runner,
    fresh: list[str],
    options: Options,
    skip_conflicts: bool,
    progress: Callable[[str], None] | None,
) -> tuple[list[Vm], observe.HostView, Population]:
    """The new VMs with their devices, networks, owner and MAC; the host as read; the
    shape of the other VMs of the state file."""
    from fireroute.want.shared import Population

    devs = devices(store, fresh, options)
    check_unique(store, runner, fresh, options)
    if progress:
        progress(f"allocating {len(fresh)} address(es)")
    nets, view = networks(store, runner, fresh, options, skip_conflicts)
    if options.egress == "public":  # the uplink's networks, recorded with the VM
        from fireroute.model import merged

        options.host_nets = merged(observe.link_networks(view.uplink, runner, options.ipv6))
    nets6: list[IPv6Network | None] = [None] * len(fresh)
    if options.ipv6:  # a /64 each, bridge guests too (routed onto the bridge: want/bridge.py)
        nets6 = list(networks6(store, len(fresh), options))
    vms = [
        Vm(n, net, devs[n], "", view.uplink, options, "pending", net6)
        for n, net, net6 in zip(fresh, nets, nets6, strict=True)
    ]
    instance = store.instance()
    shape = Population(store.shapes())
    own6 = not options.ipv6 or store.own_gateway6()
    for vm in vms:
        vm.owner = instance
        vm.own_gateway6 = own6
        vm.mac = options.mac or addressing.mac_for_vm(vm.name, vm.guest_ip)
        if vm.mode == "clone":
            vm.netns_name = f"{observe.NETNS_PREFIX}{instance}-{vm.name}"
    return vms, view, shape


def check_new(
    store: Store,
    runner: Runner,
    vms: list[Vm],
    view: observe.HostView,
    fresh: list[str],
    options: Options,
) -> set[str]:
    """A clone address not taken, each named bridge that exists a bridge: the bridges to
    make, returned."""
    bridges = {str(v.options.bridge) for v in vms if v.mode == "bridge"}
    missing_bridges = {b for b in bridges if view.links.get(b) is None}
    if options.mode == "clone" and options.clone_address not in (None, "auto"):
        from fireroute import named

        ca = IPv4Address(options.clone_address)
        check_named(store, runner, options, view.uplink, [
            named.Named("clone address", ca, named.ROUTED, fresh[0])
        ])  # fmt: skip
    for b in bridges - missing_bridges:
        link = view.links[b] or {}
        if link.get("linkinfo", {}).get("info_kind") not in (None, "bridge"):
            raise ConflictError(f'"{b}" exists on this host and is not a bridge')
    return missing_bridges
