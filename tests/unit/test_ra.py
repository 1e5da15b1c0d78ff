"""render/ra.py against bytes written out by hand from RFC 4861 4.2/4.6 and RFC 8106 5.1."""

import struct
import subprocess
import sys
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from fireroute.advertise import solicitations_only
from fireroute.render import ra

PREFIX = IPv6Network("fd3c:9a1e:52b0:1::/64")
MAC = "0a:1b:2c:3d:4e:5f"

HEADER = (
    "86 00 0000"  # type 134, code 0, checksum left to the kernel
    " 40 00 0708"  # cur hop limit 64, M=O=0, router lifetime 1800
    " 00000000 00000000"  # reachable time, retrans timer: unspecified
)
PREFIX_INFO = (
    "03 04 40 c0"  # prefix information, 4 x 8 bytes, /64, L and A
    " 00015180 00003840 00000000"  # valid 86400, preferred 14400, reserved
    " fd3c9a1e52b00001 0000000000000000"  # the prefix
)
SOURCE = "01 01 0a1b2c3d4e5f"  # source link-layer address, 1 x 8 bytes


def hexbytes(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts).replace(" ", ""))


def test_a_vms_advertisement_is_64_bytes_laid_out_as_the_rfc_says():
    mtu = "05 01 0000 000005dc"  # MTU, 1 x 8 bytes, reserved, 1500
    want = hexbytes(HEADER, PREFIX_INFO, mtu, SOURCE)
    assert len(want) == 64
    assert ra.advertisement(PREFIX, MAC) == want


def test_the_mtu_is_the_one_given():
    got = ra.advertisement(PREFIX, MAC, mtu=9000)
    assert got[48:56] == hexbytes("05 01 0000 00002328")


def test_rdnss_follows_with_the_servers_when_given():
    dns = [IPv6Address("2001:db8::53"), IPv6Address("2001:db8::54")]
    got = ra.advertisement(PREFIX, MAC, dns=dns)
    rdnss = (
        "19 05 0000 00000708"  # RDNSS, (1 + 2 x 2) x 8 bytes, reserved, lifetime 1800
        " 20010db8000000000000000000000053 20010db8000000000000000000000054"
    )
    assert got == hexbytes(HEADER, PREFIX_INFO, "05 01 0000 000005dc", SOURCE, rdnss)
    assert len(got) == 64 + 40


def test_a_solicitation_is_type_133_code_0_of_8_bytes_or_more():
    rs = hexbytes("85 00 1234 00000000")
    assert ra.is_solicitation(rs)
    assert ra.is_solicitation(rs + hexbytes("01 01 020000000001"))  # with its source option
    assert not ra.is_solicitation(rs[:7])
    assert not ra.is_solicitation(hexbytes("85 01 1234 00000000"))  # a code not 0
    assert not ra.is_solicitation(ra.advertisement(PREFIX, MAC))


def test_the_socket_filter_passes_router_solicitations_only():
    """ICMP6_FILTER's 256 bits, a set bit blocking its type (linux/icmpv6.h)."""
    words = struct.unpack("8I", solicitations_only())
    passed = [t for t in range(256) if not words[t >> 5] & (1 << (t & 31))]
    assert passed == [133]


def test_the_responder_stays_off_the_per_vm_path():
    """The CLI's module (up and down) loads neither the responder nor its raw socket code;
    the ``ra`` verb's import does (positive control)."""
    src = Path(__file__).resolve().parents[2] / "src"
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); {}; "
        "print('fireroute.advertise' in sys.modules)"
    )
    for statement, loaded in (
        ("import fireroute.cli.main", "False"),
        ("import fireroute.cli.main, fireroute.advertise", "True"),
    ):
        p = subprocess.run(
            [sys.executable, "-S", "-c", probe.format(statement), str(src)],
            capture_output=True,
            text=True,
        )
        assert p.stdout.strip() == loaded, p.stderr
