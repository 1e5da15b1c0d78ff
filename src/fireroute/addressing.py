"""Pure derivations: blocks from a pool (the guide's formula), tap names, MACs.

Each derived value comes from exactly one function here.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from fireroute.errors import PoolExhausted

TAP_PREFIX = "fr-"


def block_size(prefix: int) -> int:
    """Addresses in one block (the guide's A): 4 for /30."""
    return 1 << (32 - prefix)


def block_count(pool: IPv4Network, prefix: int) -> int:
    return pool.num_addresses // block_size(prefix)


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
    pool: IPv4Network, prefix: int, taken: list[tuple[int, int]], want: int, start: int = 0
) -> list[int]:
    """The ``want`` lowest block ordinals whose ranges overlap nothing in ``taken``.

    ``taken`` holds inclusive (first, last) integer address ranges already leased, in any pool.
    Freed blocks are therefore reused before the pool grows.
    """
    size = block_size(prefix)
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
