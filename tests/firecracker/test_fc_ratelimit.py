"""Human units -> Firecracker RateLimiter / TokenBucket objects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fireroute.firecracker.ratelimit import parse_ops, parse_rate, parse_size, rate_limiter


@pytest.mark.parametrize(
    "text, bytes_per_second",
    [
        ("200Mbit", 25_000_000),
        ("1Gbit", 125_000_000),
        ("10Gbit", 1_250_000_000),
        ("100kbit", 12_500),
        ("100Kbit", 12_500),
        ("8bit", 1),
        ("1.5Gbit", 187_500_000),
        ("0.5Mbit", 62_500),
        ("1B", 1),
        ("25MB", 25_000_000),
        ("25MB/s", 25_000_000),
        ("25 MB/s", 25_000_000),
        ("1KB", 1000),
        ("1kB", 1000),
        ("1GB", 1_000_000_000),
        ("1KiB", 1024),
        ("1MiB", 1_048_576),
        ("2.5MiB", 2_621_440),
        ("1GiB", 1_073_741_824),
        ("12bit", 1),  # 1.5 B/s rounds down
        (" 200Mbit ", 25_000_000),
    ],
)
def test_parse_rate_golden(text, bytes_per_second):
    assert parse_rate(text) == bytes_per_second


@pytest.mark.parametrize(
    "text, needle",
    [
        ("200", "expected a number with a unit"),
        ("200Mb", "invalid rate '200Mb'"),
        ("200mb", "invalid rate"),
        ("200MBit/h", "invalid rate"),
        ("-5Mbit", "invalid rate"),
        ("Mbit", "invalid rate"),
        ("1.2.3Mbit", "invalid rate"),
        ("0Mbit", "use 'off'"),
        ("0.0GB", "use 'off'"),
        ("4bit", "less than 1 byte per second"),
        ("off", "invalid rate"),
        ("", "invalid rate"),
        ("99999999999999999999GB", "too large"),
        ("٣Mbit", "invalid rate"),
    ],
)
def test_parse_rate_errors(text, needle):
    with pytest.raises(ValueError, match="invalid rate") as info:
        parse_rate(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_rate_error_lists_accepted_forms():
    with pytest.raises(ValueError) as info:
        parse_rate("5 furlongs")
    message = str(info.value)
    for unit in ("kbit", "Mbit", "Gbit", "KB/kB", "MiB", "'off'"):
        assert unit in message


@pytest.mark.parametrize(
    "text, size",
    [
        ("10MB", 10_000_000),
        ("64KiB", 65_536),
        ("1.5KiB", 1536),
        ("4096", 4096),
        ("0", 0),
        ("3B", 3),
        (4096, 4096),
    ],
)
def test_parse_size_golden(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10Mbit", "1.5B", "-1", "10 MiBs", "", None, -4, True])
def test_parse_size_errors(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("text, ops", [("10000/s", 10_000), ("1/s", 1), ("500", 500), (7, 7)])
def test_parse_ops_golden(text, ops):
    assert parse_ops(text) == ops


@pytest.mark.parametrize("text", ["0/s", "1.5/s", "10k/s", "x", "-3/s", 0, False, "10000/m"])
def test_parse_ops_errors(text):
    with pytest.raises(ValueError, match="invalid operation rate"):
        parse_ops(text)


def test_rate_limiter_golden():
    assert rate_limiter(bandwidth="200Mbit", ops="10000/s", burst="10MB") == {
        "bandwidth": {"size": 25_000_000, "refill_time": 1000, "one_time_burst": 10_000_000},
        "ops": {"size": 10_000, "refill_time": 1000},
    }


def test_rate_limiter_refill_window_scales_size():
    assert rate_limiter(bandwidth="200Mbit", refill_ms=100) == {
        "bandwidth": {"size": 2_500_000, "refill_time": 100}
    }
    assert rate_limiter(ops="10000/s", ops_burst=500, refill_ms=10) == {
        "ops": {"size": 100, "refill_time": 10, "one_time_burst": 500}
    }


def test_rate_limiter_off_is_a_zero_bucket():
    assert rate_limiter(bandwidth="off", ops="OFF") == {
        "bandwidth": {"size": 0, "refill_time": 0},
        "ops": {"size": 0, "refill_time": 0},
    }


def test_rate_limiter_int_inputs_and_empty():
    assert rate_limiter(bandwidth=1000, ops=10) == {
        "bandwidth": {"size": 1000, "refill_time": 1000},
        "ops": {"size": 10, "refill_time": 1000},
    }
    assert rate_limiter() == {}


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"bandwidth": "off", "burst": "1MB"}, "burst makes no sense"),
        ({"burst": "1MB"}, "burst needs a bandwidth"),
        ({"ops_burst": 5}, "ops burst needs an ops"),
        ({"ops": "off", "ops_burst": 5}, "ops burst makes no sense"),
        ({"bandwidth": "1Mbit", "refill_ms": 0}, "invalid refill time 0"),
        ({"bandwidth": "1Mbit", "refill_ms": 1.5}, "invalid refill time"),
        ({"bandwidth": "8bit", "refill_ms": 100}, "too small for a 100 ms refill"),
        ({"bandwidth": 0}, "use 'off'"),
        ({"bandwidth": "1Mbit", "burst": "1Mbit"}, "invalid size"),
        ({"ops": "10/s", "ops_burst": "many"}, "invalid ops burst"),
    ],
)
def test_rate_limiter_errors(kwargs, needle):
    with pytest.raises(ValueError) as info:
        rate_limiter(**kwargs)
    assert needle in str(info.value)


@given(st.integers(min_value=1, max_value=10**12))
def test_byte_units_are_exact(n):
    assert parse_rate(f"{n}B") == n
    assert parse_rate(f"{n}KB") == n * 1000
    assert parse_rate(f"{n}MiB/s") == n * 1024**2
    assert parse_rate(f"{n}kbit") == n * 125


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=1, max_value=60_000))
def test_bucket_rate_never_exceeds_request(rate, refill_ms):
    try:
        bucket = rate_limiter(bandwidth=rate, refill_ms=refill_ms)["bandwidth"]
    except ValueError:
        assert rate * refill_ms < 1000
        return
    assert bucket["refill_time"] == refill_ms
    assert bucket["size"] >= 1
    # size/refill_time is the granted rate: at most the request, less than one token short
    assert bucket["size"] * 1000 <= rate * refill_ms < (bucket["size"] + 1) * 1000


@pytest.mark.parametrize(
    "limiter",
    [
        rate_limiter(bandwidth="200Mbit", ops="10000/s", burst="10MB"),
        rate_limiter(bandwidth="off", ops="off"),
        rate_limiter(bandwidth="1GiB", refill_ms=5),
        rate_limiter(),
    ],
)
def test_limiters_conform_to_the_spec(spec, limiter):
    assert spec.errors(limiter, spec.definition("RateLimiter")) == []
