"""The bridge table's ``targets6`` set (a ``typeof`` key with a 64-bit raw payload field: the
/64 a guest's neighbour advertisements may name) through the layers that write and read it:
its declaration, the element want/ renders, the in-process writer's key encoding, and the
reader's text of nft's JSON (tests/kernel/test_bridge_na6.py and test_drift_bridge6.py run
them against the kernel)."""

from __future__ import annotations

from ipaddress import IPv6Address

from fireroute.kernel import nftnl, observe
from fireroute.want.nft import FILTER_SETS, prefix64
from fireroute.want.tables import declared

TYPEOF = "typeof iifname . @th,64,64"


def test_the_set_is_declared_with_typeof_and_others_with_type():
    assert FILTER_SETS["targets6"] == TYPEOF
    assert declared(TYPEOF) == TYPEOF
    assert declared("ifname . ipv6_addr") == "type ifname . ipv6_addr"


def test_an_element_names_the_prefix_as_nft_lists_it():
    assert prefix64(IPv6Address("fd3c:9a1e:52b0:1::")) == "0xfd3c9a1e52b00001"
    assert prefix64(IPv6Address("::1:0:0:0:1")) == "0x1"  # (no zero padding, as nft lists it)


def test_the_in_process_writer_takes_the_typeof_key():
    ktype, klen, ids = nftnl.key_type(TYPEOF)
    assert (ktype, klen, ids) == ((41 << 6) | 4, 24, [41, 4])  # ifname . integer (8 bytes)
    fields = ['"fr-a"', "0xfd3c9a1e52b00001"]
    raw = nftnl.encode_key(ids, fields)
    assert raw == b"fr-a".ljust(16, b"\0") + bytes.fromhex("fd3c9a1e52b00001")
    assert nftnl.decode_key(ids, raw) == fields
    from fireroute.want.nft import FILTER_SETS

    assert FILTER_SETS["targets6"] == TYPEOF  # (what the in-process writer declares it as)
    for bad in ("0x1" + "0" * 16, "1", "-0x1"):  # wider than 64 bits, not hex, negative
        assert nftnl._integer(bad, False) is None


def test_the_reader_gives_nfts_signed_json_integer_as_hex():
    listing = [
        {
            "set": {
                "name": "targets6",
                "type": ["ifname", "integer"],
                "elem": [
                    {"elem": {"val": {"concat": ["fr-b", -216172782113783808]}, "comment": "x:b"}},
                    {"elem": {"val": {"concat": ["fr-a", 1]}, "comment": "x:a"}},
                ],
            }
        }
    ]
    got = observe._elements_of(listing)
    assert got == {'"fr-b" . 0xfd00000000000000': "x:b", '"fr-a" . 0x1': "x:a"}
