from ipaddress import IPv4Address, IPv4Network

import pytest

from fireroute import addressing
from fireroute.errors import PoolExhausted

POOL = IPv4Network("172.16.0.0/16")


def test_guide_formula_first_and_thousandth_vm():
    b0 = addressing.block(POOL, 30, 0)
    assert (b0.network_address + 1, b0.network_address + 2) == (
        IPv4Address("172.16.0.1"),
        IPv4Address("172.16.0.2"),
    )
    b1 = addressing.block(POOL, 30, 1)
    assert b1.network_address + 1 == IPv4Address("172.16.0.5")
    b999 = addressing.block(POOL, 30, 999)
    assert b999.network_address + 1 == IPv4Address("172.16.15.157")
    assert b999.network_address + 2 == IPv4Address("172.16.15.158")


CASES = [
    (o, p)
    for p in (24, 28, 29, 30)
    for o in (0, 1, 63, 64, 255, 999, 16383)
    if o < addressing.block_count(POOL, p)
]


@pytest.mark.parametrize("ordinal,prefix", CASES)
def test_formula_matches_guide_arithmetic(ordinal, prefix):
    a = 1 << (32 - prefix)
    b = addressing.block(POOL, prefix, ordinal)
    tap = f"172.16.{(a * ordinal + 1) // 256}.{(a * ordinal + 1) % 256}"
    guest = f"172.16.{(a * ordinal + 2) // 256}.{(a * ordinal + 2) % 256}"
    assert str(b.network_address + 1) == tap
    assert str(b.network_address + 2) == guest


def test_mac_from_guest_ip():
    assert addressing.mac_for(IPv4Address("172.16.0.2")) == "06:00:AC:10:00:02"
    assert addressing.mac_for(IPv4Address("172.16.15.158")) == "06:00:AC:10:0F:9E"


def test_free_ordinals_sequential_and_reuse():
    assert addressing.free_ordinals(POOL, 30, [], 3) == [0, 1, 2]
    base = int(POOL.network_address)
    taken = [(base, base + 3), (base + 8, base + 11)]  # blocks 0 and 2 taken, 1 freed
    assert addressing.free_ordinals(POOL, 30, taken, 3) == [1, 3, 4]


def test_free_ordinals_skip_larger_foreign_range():
    base = int(POOL.network_address)
    taken = [(base, base + 255)]  # a /24 lease blocks the first 64 /30s
    assert addressing.free_ordinals(POOL, 30, taken, 1) == [64]


def test_pool_exhausted():
    small = IPv4Network("10.9.0.0/29")
    base = int(small.network_address)
    with pytest.raises(PoolExhausted, match="exhausted"):
        addressing.free_ordinals(small, 30, [(base, base + 3)], 2)
    assert addressing.free_ordinals(small, 30, [(base, base + 3)], 1) == [1]


def test_tap_names_fit_and_differ():
    assert addressing.default_tap_name("web-1") == "fr-web-1"
    long_a = addressing.default_tap_name("a-very-long-vm-name-1")
    long_b = addressing.default_tap_name("a-very-long-vm-name-2")
    assert len(long_a.encode()) <= 15 and len(long_b.encode()) <= 15
    assert long_a != long_b and long_a.startswith("fr-")
    assert len(addressing.default_tap_name("exactly12chr")) == 15


def test_store_first_free_and_start(tmp_path):
    """The SQL gap search the allocator starts from agrees with a plain scan."""
    from fireroute.model import Options, Vm
    from fireroute.state.store import Store

    store = Store(tmp_path / "s.db")
    opts = Options()
    used = [0, 1, 2, 4, 5, 9]
    store.reserve(
        [
            Vm(f"v{o}", addressing.block(POOL, 30, o), f"t{o}", "06:00:00:00:00:01", "eth0", opts)
            for o in used
        ]
    )
    lo, hi = int(POOL.network_address), int(POOL.broadcast_address)
    first = store.first_free(lo, hi)
    assert first == lo + 3 * 4  # block 3 is the first hole
    start = (first - lo) // 4
    got = addressing.free_ordinals(POOL, 30, store.taken_from(lo + start * 4, hi), 4, start)
    assert got == addressing.free_ordinals(POOL, 30, store.taken(), 4) == [3, 6, 7, 8]


def colliding_names() -> tuple[str, str]:
    """Two long VM names whose first tap names collide (24 bits of hash: a birthday search)."""
    seen: dict[str, str] = {}
    i = 0
    while True:
        name = f"worker-node-{i}"
        tap = addressing.default_tap_name(name)
        if tap in seen:
            return seen[tap], name
        seen[tap] = name
        i += 1


def test_a_later_attempt_gives_another_tap_name():
    a, b = colliding_names()
    assert addressing.default_tap_name(a) == addressing.default_tap_name(b)  # a real collision
    assert addressing.default_tap_name(b, 1) != addressing.default_tap_name(a)
    assert len(addressing.default_tap_name(b, 1).encode()) <= 15
