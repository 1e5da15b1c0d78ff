"""Human-friendly rates and sizes turned into Firecracker ``RateLimiter`` objects.

A Firecracker ``RateLimiter`` holds up to two token buckets (``TokenBucket`` in the
OpenAPI spec): ``bandwidth`` (tokens are bytes) and ``ops`` (tokens are operations,
i.e. packets for a net device). A bucket holds ``size`` tokens and refills completely
every ``refill_time`` milliseconds, so its steady rate is ``size / refill_time``;
``one_time_burst`` is an extra initial budget spent before refilling starts.

A bucket with ``size`` 0 (and ``refill_time`` 0) means "no limit": that is how the
patch-network-interface guide says to remove a limit with PATCH. For that reason a
rate of zero is refused here -- "0Mbit" would silently mean *unlimited*; say ``off``.
"""

# unit -> (numerator, denominator) converting one unit per second into bytes/s
_RATE_UNITS: dict[str, tuple[int, int]] = {
    "bit": (1, 8),
    "kbit": (1000, 8),
    "mbit": (1000**2, 8),
    "gbit": (1000**3, 8),
    "B": (1, 1),
    "KB": (1000, 1),
    "kB": (1000, 1),
    "MB": (1000**2, 1),
    "GB": (1000**3, 1),
    "KiB": (1024, 1),
    "MiB": (1024**2, 1),
    "GiB": (1024**3, 1),
}
_SIZE_UNITS = {k: v for k, v in _RATE_UNITS.items() if v[1] == 1}

RATE_FORMS = (
    "a number with a unit per second: bit, kbit, Mbit, Gbit (bits) or B, KB/kB, MB, GB, "
    "KiB, MiB, GiB (bytes), optionally followed by '/s', e.g. '200Mbit' or '25MB/s'; "
    "or 'off'"
)
SIZE_FORMS = "a whole number of bytes, optionally with a unit: B, KB/kB, MB, GB, KiB, MiB, GiB"
OPS_FORMS = "a whole number of operations per second such as '10000/s' (or '10000'); or 'off'"

# Largest value the spec's int64 fields can hold.
_INT64_MAX = 2**63 - 1

OFF_BUCKET = {"size": 0, "refill_time": 0}


def _split_number(text: str) -> tuple[int, int, str] | None:
    """'1.5Gbit' -> (15, 10, 'Gbit'): an exact decimal as a fraction plus the rest."""
    i = 0
    while i < len(text) and (text[i].isdigit() or text[i] == "."):
        i += 1
    number, rest = text[:i], text[i:].strip()
    if not number or number.count(".") > 1 or number == ".":
        return None
    whole, _, frac = number.partition(".")
    if not (whole + frac).isascii():
        return None
    numerator = int((whole or "0") + frac)
    denominator = 10 ** len(frac)
    return numerator, denominator, rest


def _lookup_rate_unit(unit: str) -> tuple[int, int] | None:
    if unit.endswith("/s"):
        unit = unit[:-2].rstrip()
    if unit.lower().endswith("bit"):
        return _RATE_UNITS.get(unit.lower())
    return _RATE_UNITS.get(unit)


def _is_off(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == "off"


def parse_rate(text: str) -> int:
    """Parse a rate such as ``"200Mbit"`` into whole bytes per second (rounded down).

    A unit is mandatory: a bare number could mean bits or bytes. Zero is refused (a
    zero-sized bucket disables limiting in Firecracker); use ``"off"`` via
    :func:`rate_limiter` for that.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid rate {text!r}: expected {RATE_FORMS}")
    parsed = _split_number(text.strip())
    unit = _lookup_rate_unit(parsed[2]) if parsed else None
    if parsed is None or unit is None:
        raise ValueError(f"invalid rate {text!r}: expected {RATE_FORMS}")
    numerator, denominator, _ = parsed
    value = numerator * unit[0] // (denominator * unit[1])
    if numerator == 0:
        raise ValueError(
            f"invalid rate {text!r}: must be greater than zero (use 'off' to remove a limit)"
        )
    if value < 1:
        raise ValueError(f"invalid rate {text!r}: less than 1 byte per second")
    if value > _INT64_MAX:
        raise ValueError(f"invalid rate {text!r}: too large")
    return value


def parse_size(text: str | int) -> int:
    """Parse a size such as ``"10MB"`` or ``"64KiB"`` (bare numbers are bytes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if 0 <= text <= _INT64_MAX:
            return text
        raise ValueError(f"invalid size {text!r}: expected {SIZE_FORMS}")
    if not isinstance(text, str):
        raise ValueError(f"invalid size {text!r}: expected {SIZE_FORMS}")
    parsed = _split_number(text.strip())
    if parsed is None:
        raise ValueError(f"invalid size {text!r}: expected {SIZE_FORMS}")
    numerator, denominator, unit_text = parsed
    unit = _SIZE_UNITS.get(unit_text or "B")
    if unit is None:
        raise ValueError(f"invalid size {text!r}: expected {SIZE_FORMS}")
    total_num = numerator * unit[0]
    if total_num % denominator:
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    value = total_num // denominator
    if value > _INT64_MAX:
        raise ValueError(f"invalid size {text!r}: too large")
    return value


def parse_ops(text: str | int) -> int:
    """Parse an operation rate such as ``"10000/s"`` into operations per second."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str):
        body = text.strip()
        if body.endswith("/s"):
            body = body[:-2].rstrip()
        if not (body.isascii() and body.isdigit()):
            raise ValueError(f"invalid operation rate {text!r}: expected {OPS_FORMS}")
        value = int(body)
    else:
        raise ValueError(f"invalid operation rate {text!r}: expected {OPS_FORMS}")
    if value <= 0:
        raise ValueError(
            f"invalid operation rate {text!r}: must be greater than zero "
            "(use 'off' to remove a limit)"
        )
    if value > _INT64_MAX:
        raise ValueError(f"invalid operation rate {text!r}: too large")
    return value


def token_bucket(per_second: int, refill_ms: int, one_time_burst: int | None = None) -> dict:
    """A TokenBucket refilling ``per_second`` tokens per second in ``refill_ms`` steps."""
    size = per_second * refill_ms // 1000
    if size < 1:
        raise ValueError(
            f"rate of {per_second} per second is too small for a {refill_ms} ms refill "
            "window (the bucket would hold 0 tokens, which Firecracker reads as unlimited)"
        )
    if size > _INT64_MAX:
        raise ValueError(f"rate of {per_second} per second is too large")
    bucket = {"size": size, "refill_time": refill_ms}
    if one_time_burst:
        bucket["one_time_burst"] = one_time_burst
    return bucket


def _check_refill(refill_ms: object) -> int:
    if isinstance(refill_ms, bool) or not isinstance(refill_ms, int) or refill_ms < 1:
        raise ValueError(
            f"invalid refill time {refill_ms!r}: expected a whole number of milliseconds >= 1"
        )
    if refill_ms > _INT64_MAX // 10**6:  # Firecracker converts it to nanoseconds
        raise ValueError(f"invalid refill time {refill_ms!r}: too large")
    return refill_ms


def rate_limiter(
    bandwidth: str | int | None = None,
    ops: str | int | None = None,
    burst: str | int | None = None,
    refill_ms: int = 1000,
    ops_burst: str | int | None = None,
) -> dict:
    """Build a Firecracker ``RateLimiter`` object.

    ``bandwidth``: a rate (``"200Mbit"``; an int is bytes/s) or ``"off"``.
    ``ops``: an operation rate (``"10000/s"``; an int is ops/s) or ``"off"``.
    ``burst`` / ``ops_burst``: ``one_time_burst`` of the bandwidth / ops bucket
    (a size such as ``"10MB"`` / a number of operations).
    ``refill_ms``: the buckets' ``refill_time``; ``size`` is the amount per refill.

    ``"off"`` yields ``{"size": 0, "refill_time": 0}``, the documented way to remove a
    limit. A bucket left as ``None`` is omitted: in a PUT that means no limit, in a
    PATCH it means "leave as it is". With neither bucket the result is ``{}``.
    """
    refill_ms = _check_refill(refill_ms)
    result: dict = {}

    if bandwidth is not None:
        if _is_off(bandwidth):
            if burst is not None:
                raise ValueError("a burst makes no sense with bandwidth 'off'")
            result["bandwidth"] = dict(OFF_BUCKET)
        else:
            if isinstance(bandwidth, int) and not isinstance(bandwidth, bool):
                if bandwidth <= 0:
                    raise ValueError(
                        f"invalid rate {bandwidth!r}: must be greater than zero "
                        "(use 'off' to remove a limit)"
                    )
                per_second = bandwidth
            else:
                per_second = parse_rate(bandwidth)  # type: ignore[arg-type]
            one_time = parse_size(burst) if burst is not None else None
            result["bandwidth"] = token_bucket(per_second, refill_ms, one_time)
    elif burst is not None:
        raise ValueError("a burst needs a bandwidth limit")

    if ops is not None:
        if _is_off(ops):
            if ops_burst is not None:
                raise ValueError("an ops burst makes no sense with ops 'off'")
            result["ops"] = dict(OFF_BUCKET)
        else:
            one_time = _parse_count(ops_burst) if ops_burst is not None else None
            result["ops"] = token_bucket(parse_ops(ops), refill_ms, one_time)
    elif ops_burst is not None:
        raise ValueError("an ops burst needs an ops limit")

    return result


def _parse_count(value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX:
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    raise ValueError(f"invalid ops burst {value!r}: expected a whole number of operations")
