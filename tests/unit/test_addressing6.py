"""IPv6 addressing (issue 24, docs/ipv6-plan.md 1.1 and 1.2): a /64 per VM, the guest at its
``::2``, fe80::1 its gateway; a generated ULA /48 pool; hex keys that sort like the numbers."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Address, IPv6Interface, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fireroute import addressing
from fireroute.errors import PoolExhausted, UsageError

POOL = IPv6Network("fd3c:9a1e:52b0::/48")


@pytest.mark.parametrize(
    "ordinal,guest",
    [
        (0, "fd3c:9a1e:52b0::2/64"),
        (1, "fd3c:9a1e:52b0:1::2/64"),
        (4095, "fd3c:9a1e:52b0:fff::2/64"),
        (65535, "fd3c:9a1e:52b0:ffff::2/64"),  # the last block of a /48
    ],
)
def test_the_plans_examples(ordinal, guest):
    block = addressing.block6(POOL, ordinal)
    assert addressing.guest6(block) == IPv6Interface(guest)
    assert block == IPv6Interface(guest).network
    assert block.prefixlen == addressing.BLOCK6_PREFIX == 64


@given(st.integers(0, 65535))
def test_block_is_the_pools_first_address_plus_ordinal_times_2_64(ordinal):
    block = addressing.block6(POOL, ordinal)
    assert int(block.network_address) == int(POOL.network_address) + ordinal * 2**64
    assert block.subnet_of(POOL)
    assert int(addressing.guest6(block).ip) == int(block.network_address) + 2


def test_a_block_past_the_pool_is_refused():
    last = addressing.block6(POOL, 65535)  # positive control: the last one is there
    assert last.broadcast_address == POOL.broadcast_address
    for ordinal in (65536, -1):
        with pytest.raises(PoolExhausted, match="block number"):
            addressing.block6(POOL, ordinal)


@pytest.mark.parametrize(
    "pool,count",
    [("fd3c:9a1e:52b0::/48", 65536), ("2001:db8:1:100::/56", 256), ("2001:db8:1:10::/60", 16)],
)
def test_capacity(pool, count):
    assert addressing.block6_count(IPv6Network(pool)) == count
    addressing.block6(IPv6Network(pool), count - 1)
    with pytest.raises(PoolExhausted):
        addressing.block6(IPv6Network(pool), count)


def test_one_gateway_for_every_guest():
    assert IPv6Address("fe80::1") == addressing.GATEWAY6


def test_v4_block_sizes_are_unchanged():
    """block_size's width defaults to IPv4's: every v4 caller gets what it got before."""
    assert addressing.block_size(30) == 4 and addressing.block_size(24) == 256
    assert addressing.block_count(IPv4Network("172.16.0.0/16"), 30) == 16384
    assert addressing.block_size(64, 128) == 2**64


def test_free_ordinals_over_a_v6_pool():
    """The v4 search serves v6 pools: a taken /64 is skipped, freed ones are reused first."""
    b = [addressing.block6(POOL, o) for o in range(4)]
    taken = [(int(n.network_address), int(n.broadcast_address)) for n in (b[0], b[2])]
    assert addressing.free_ordinals(POOL, 64, taken, 3) == [1, 3, 4]
    assert addressing.free_ordinals(POOL, 64, [], 2) == [0, 1]  # control: nothing taken
    small = IPv6Network("2001:db8:1:10::/62")
    with pytest.raises(PoolExhausted, match="exhausted"):
        addressing.free_ordinals(small, 64, taken, 5)


# -- the pool: a /64 or shorter


@pytest.mark.parametrize("pool", ["fd3c:9a1e:52b0::/48", "2001:db8:1:100::/56", "fd00::/64"])
def test_pools_that_hold_a_block(pool):
    assert addressing.check_pool6(IPv6Network(pool)) == IPv6Network(pool)


@pytest.mark.parametrize("prefix", [65, 80, 112, 128])
def test_pools_smaller_than_a_block_are_refused(prefix):
    pool = IPv6Network(f"fd3c:9a1e:52b0::/{prefix}")
    with pytest.raises(UsageError, match=f'"fd3c:9a1e:52b0::/{prefix}": a /{prefix} is smaller'):
        addressing.check_pool6(pool)


def test_a_v4_network_is_no_v6_pool():
    with pytest.raises(UsageError, match="expected an IPv6 network"):
        addressing.check_pool6(IPv4Network("10.0.0.0/8"))  # type: ignore[arg-type]


# -- the default pool: a ULA /48 from 40 random bits

ULA = IPv6Network("fd00::/8")
METADATA = IPv6Network("fd00:ec2::/48")


@given(st.binary(min_size=5, max_size=5))
def test_ula_pool_is_fd_and_the_40_bits(raw):
    pool = addressing.ula_pool(raw)
    assert pool.prefixlen == 48 and pool.subnet_of(ULA)
    assert pool != METADATA
    if raw != bytes.fromhex("000ec20000"):
        assert pool.network_address.packed[1:6] == raw  # the bits as given, nothing else


def test_ula_pool_examples():
    assert addressing.ula_pool(bytes.fromhex("3c9a1e52b0")) == POOL
    assert addressing.ula_pool(bytes(5)) == IPv6Network("fd00::/48")
    assert addressing.ula_pool(b"\xff" * 5) == IPv6Network("fdff:ffff:ffff::/48")


def test_ula_pool_never_the_metadata_prefix():
    """The bytes that would give fd00:ec2::/48 give another /48; their neighbours do not move
    (positive control: the check is that one value only)."""
    assert addressing.ula_pool(bytes.fromhex("000ec20000")) == IPv6Network("fd00:ec2:1::/48")
    assert addressing.ula_pool(bytes.fromhex("000ec20002")) == IPv6Network("fd00:ec2:2::/48")
    assert addressing.ula_pool(bytes.fromhex("000ec10000")) == IPv6Network("fd00:ec1::/48")


@pytest.mark.parametrize("size", [0, 4, 6, 16])
def test_ula_pool_takes_five_bytes(size):
    with pytest.raises(ValueError, match="5 bytes"):
        addressing.ula_pool(bytes(size))


# -- hex keys: fixed-width text that orders like the numbers

ADDRESSES = st.integers(0, 2**128 - 1)


@given(st.lists(ADDRESSES, max_size=30))
def test_hex_keys_sort_like_the_numbers(values):
    keys = [addressing.hex_key(v) for v in values]
    assert sorted(keys) == [addressing.hex_key(v) for v in sorted(values)]
    assert all(len(k) == 32 and int(k, 16) == v for k, v in zip(keys, values, strict=True))


@given(ADDRESSES, ADDRESSES)
def test_hex_keys_compare_like_the_numbers(a, b):
    ka, kb = addressing.hex_key(a), addressing.hex_key(b)
    assert (ka < kb) == (a < b) and (ka == kb) == (a == b)


def test_hex_key_examples():
    block = addressing.block6(POOL, 1)
    assert addressing.hex_key(int(block.network_address)) == "fd3c9a1e52b000010000000000000000"
    assert addressing.hex_key(int(block.broadcast_address)) == "fd3c9a1e52b00001ffffffffffffffff"
    assert addressing.hex_key(0) == "0" * 32
    assert addressing.hex_key(2**128 - 1) == "f" * 32


@pytest.mark.parametrize("value", [-1, 2**128])
def test_hex_key_of_no_address_is_refused(value):
    with pytest.raises(ValueError, match="128-bit"):
        addressing.hex_key(value)
