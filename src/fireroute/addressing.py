"""Pure derivations: blocks from a pool (the guide's formula), tap names, MACs.

Each derived value comes from exactly one function here.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

from fireroute.errors import PoolExhausted, UsageError

TAP_PREFIX = "fr-"


def block_size(prefix: int, width: int = 32) -> int:
    """Addresses in one block (the guide's A) of an address ``width`` bits wide: 4 for a /30
    of IPv4, 2**64 for a /64 of IPv6."""
    return 1 << (width - prefix)


def block_count(pool: IPv4Network | IPv6Network, prefix: int) -> int:
    return pool.num_addresses // block_size(prefix, pool.max_prefixlen)


def block(pool: IPv4Network, prefix: int, ordinal: int) -> IPv4Network:
    """Block number ``ordinal`` (0-based) of the pool: tap IP = base + A*O + 1, guest = +2."""
    if not 0 <= ordinal < block_count(pool, prefix):
        raise PoolExhausted(f"pool {pool} has no /{prefix} block number {ordinal}")
    start = pool.network_address + block_size(prefix) * ordinal
    return IPv4Network(f"{start}/{prefix}")


def veth_pair(net: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """(host end, namespace end) of a veth link's block: its first and second addresses."""
    return net.network_address + 1, net.network_address + 2


def mac_for(guest_ip: IPv4Address) -> str:
    """``06:00:`` followed by the guest IPv4's four octets, as the guide's rootfs expects."""
    return "06:00:" + ":".join(f"{b:02X}" for b in guest_ip.packed)


CNI_LINK_MACS = {"host": "0A:00:", "veth": "0A:01:", "tap": "0A:02:"}


def cni_link_mac(link: str, guest_ip: IPv4Address) -> str:
    """The MAC of a CNI attachment's link (``host``: the host veth, which the guest sees as
    its gateway's; ``veth``, ``tap``: inside the namespace, never seen by the guest): set when
    made, so ADD's result names them without reading the kernel back."""
    return CNI_LINK_MACS[link] + ":".join(f"{b:02X}" for b in guest_ip.packed)


def mac_for_vm(vm: str, guest_ip: IPv4Address | None) -> str:
    """The guide's MAC for a known guest address; for a DHCP guest a stable locally
    administered one from the VM name (``06:01:`` + 4 bytes of its SHA-1)."""
    if guest_ip is not None:
        return mac_for(guest_ip)
    import hashlib

    digest = hashlib.sha1(vm.encode()).digest()[:4]
    return "06:01:" + ":".join(f"{b:02X}" for b in digest)


def digest(text: str) -> str:
    """16 hex digits of FNV-1a (64 bit) of ``text``: a stable, well-spread name part, without
    hashlib (whose import costs ~4 ms of a command that runs once per attachment)."""
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


CNI_DEV_PREFIX = "frc"


def cni_dev_name(vm: str, attempt: int = 0) -> str:
    """The host end of a CNI attachment's veth: ``frc`` + 12 hex digits of the VM's name (a
    later ``attempt`` when a name of the state file already has it)."""
    return CNI_DEV_PREFIX + digest(vm if attempt == 0 else f"{vm}\0{attempt}")[:12]


def default_tap_name(vm: str, attempt: int = 0) -> str:
    """``fr-<vm>`` when it fits in 15 bytes, else ``fr-<first 5>-<6 hex of sha1(vm)>``.
    A later ``attempt`` (the name is taken by another VM of the state file: 24 bits of hash
    collide among a few thousand names with one prefix) hashes ``vm`` with the attempt."""
    if attempt == 0 and len(TAP_PREFIX) + len(vm) <= 15:
        return TAP_PREFIX + vm
    import hashlib

    seed = vm if attempt == 0 else f"{vm}\0{attempt}"
    digest = hashlib.sha1(seed.encode()).hexdigest()[:6]
    return f"{TAP_PREFIX}{vm[:5]}-{digest}"


def overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start <= b_end and b_start <= a_end


def free_ordinals(
    pool: IPv4Network | IPv6Network,
    prefix: int,
    taken: list[tuple[int, int]],
    want: int,
    start: int = 0,
) -> list[int]:
    """The ``want`` lowest block ordinals whose ranges overlap nothing in ``taken``.

    ``taken`` holds inclusive (first, last) integer address ranges already leased, in any pool
    (of the pool's family: an IPv6 pool's blocks are /64s, :data:`BLOCK6_PREFIX`).
    Freed blocks are therefore reused before the pool grows.
    """
    size = block_size(prefix, pool.max_prefixlen)
    base = int(pool.network_address)
    count = block_count(pool, prefix)
    relevant = sorted(
        (s, e) for s, e in taken if overlaps(s, e, base, base + pool.num_addresses - 1)
    )
    out: list[int] = []
    i = 0
    ordinal = start
    while len(out) < want and ordinal < count:
        start = base + size * ordinal
        end = start + size - 1
        while i < len(relevant) and relevant[i][1] < start:
            i += 1
        if i < len(relevant) and relevant[i][0] <= end:
            # jump past the blocking range
            ordinal = max(ordinal + 1, (relevant[i][1] + 1 - base + size - 1) // size)
            continue
        out.append(ordinal)
        ordinal += 1
    if len(out) < want:
        raise PoolExhausted(
            f"pool {pool} is exhausted: {want} /{prefix} block(s) wanted, {len(out)} free"
        )
    return out


# -- IPv6 (issue 24, docs/ipv6-plan.md 1.1, 1.2): a /64 per VM -------------------------------

BLOCK6_PREFIX = 64
"""every v6 VM's block is a /64 (SLAAC configures guests on a /64 only)"""
GATEWAY6 = IPv6Address((0xFE80 << 112) | 1)
"""fe80::1: the IPv6 gateway of a bridge, clone or CNI guest, and of a NAT guest whose lease
predates gateways of their own (:func:`gateway6_text`)"""
ULA_FIRST_BYTE = 0xFD
"""fd00::/8: the locally assigned half of fc00::/7, where a generated pool lies"""
METADATA6_GLOBAL_ID = 0x000EC20000
"""the global id of fd00:ec2::/48, which holds a metadata address: never a generated pool"""


MIN_PREFIX6, MAX_PREFIX6 = BLOCK6_PREFIX, 126
"""``--prefix6``: a VM's block is a /64 (default) or, in a global pool (proxy NDP), a /65 to a
/126 (a /126 still holds the guest's ``::2``)"""
ULA6 = IPv6Network("fc00::/7")


def unique_local6(net: IPv6Network) -> bool:
    """Is ``net`` in fc00::/7 (a pool that is masqueraded)?"""
    return net.subnet_of(ULA6)


def check_pool6(
    pool: IPv6Network, what: str = "--pool6", prefix: int = BLOCK6_PREFIX
) -> IPv6Network:
    """An IPv6 pool holds at least one /64 block: prefix length 64 or shorter (the default
    is a /48; a delegated /56 or /60 serves too); with ``--prefix6`` N, one /N block."""
    if not isinstance(pool, IPv6Network):
        raise UsageError(f'invalid {what} "{pool}": expected an IPv6 network')
    if pool.prefixlen > prefix:
        raise UsageError(
            f'invalid {what} "{pool}": a /{pool.prefixlen} is smaller than one VM\'s '
            f"/{prefix} block; use a /{prefix} or a shorter prefix"
            + (" (such as /48)" if prefix == BLOCK6_PREFIX else "")
        )
    return pool


def block6_count(pool: IPv6Network, prefix: int = BLOCK6_PREFIX) -> int:
    """How many VMs (a /64 each) ``pool`` holds: 65,536 in a /48, 256 in a /56, 16 in a /60
    (of /``prefix`` blocks: 2**(prefix - pool's length))."""
    return block_count(pool, prefix)


def block6(pool: IPv6Network, ordinal: int, prefix: int = BLOCK6_PREFIX) -> IPv6Network:
    """Block number ``ordinal`` (0-based, the VM's v6 ordinal) of the pool: the pool's first
    address + ordinal * 2**(128 - prefix), a /64 (or the /``prefix`` of ``--prefix6``)."""
    if not 0 <= ordinal < block6_count(pool, prefix):
        raise PoolExhausted(f"pool {pool} has no /{prefix} block number {ordinal}")
    start = int(pool.network_address) + block_size(prefix, 128) * ordinal
    return IPv6Network((start, prefix))


def guest6(block: IPv6Network) -> IPv6Interface:
    """The guest's address in its block: the block's ``::2`` (the guide's ".2"), prefix 64."""
    return IPv6Interface((int(block.network_address) + 2, block.prefixlen))


def gateway6_text(block: IPv6Network) -> str:
    """A NAT VM's own IPv6 gateway, the host side of its tap, as ``ip address`` prints it:
    ``fe80::1:X:Y:Z``, the low 48 bits of its block's ordinal (its /64's network bits) as
    X:Y:Z. Every tap holding one address (``fe80::1``) puts them all in one bucket of the
    kernel's address hash and under one node of its local routing table, so each add walks
    them all (bench/addr_add6.py: 2.5 s of ``ip`` for 4000 taps, 1.1 s with distinct ones).
    Unique among a pool's first 2**48 blocks; a guest's own link-local address (EUI-64:
    ``..ff:fe..`` in its middle; or random) does not take the form. Written from integers:
    an address's text through ipaddress is dear, and every v6 VM's plan asks."""
    o = int(block.network_address) >> (128 - block.prefixlen)
    return f"fe80::1:{(o >> 32) & 0xFFFF:x}:{(o >> 16) & 0xFFFF:x}:{o & 0xFFFF:x}"


def ula_pool(random_bytes: bytes) -> IPv6Network:
    """A unique local /48 (RFC 4193): ``fd`` + the 40 bits of ``random_bytes`` (5 bytes; a
    caller passes ``os.urandom(5)``). fd00:ec2::/48 is never returned: those bytes give
    fd00:ec2:1::/48 instead (drawn at twice the odds of any other pool: 2**-39)."""
    if len(random_bytes) != 5:
        raise ValueError(f"a ULA's global id is 5 bytes (40 bits), not {len(random_bytes)}")
    global_id = int.from_bytes(random_bytes, "big")
    start = (ULA_FIRST_BYTE << 120) | (global_id << 80)
    if global_id == METADATA6_GLOBAL_ID:
        start |= 1 << 80  # the next /48: fd00:ec2:1::/48
    return IPv6Network((start, 48))


HEX_KEY_DIGITS = 32


def hex_key(value: int) -> str:
    """An IPv6 address as a number, in 32 lowercase hex digits: text that sorts like the
    numbers (SQLite's integers are 64 bits signed; its text columns compare bytewise)."""
    if not 0 <= value < 1 << 128:
        raise ValueError(f"{value} is not a 128-bit address")
    return f"{value:0{HEX_KEY_DIGITS}x}"
