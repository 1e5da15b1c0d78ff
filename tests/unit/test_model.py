from ipaddress import IPv4Network

import pytest

from fireroute.errors import UsageError
from fireroute.model import Options, Owner, check_ifname, check_mac, check_vm_name


@pytest.mark.parametrize("name", ["web-1", "a", "A.b_c-9", "x" * 63])
def test_good_vm_names(name):
    assert check_vm_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "x" * 64, "a b", "a;rm -rf", "a/b", "é", "a\n"])
def test_bad_vm_names(name):
    with pytest.raises(UsageError, match="invalid vm name"):
        check_vm_name(name)


def test_tap_name_limits():
    assert check_ifname("tap0") == "tap0"
    with pytest.raises(UsageError, match="15"):
        check_ifname("x" * 16)
    with pytest.raises(UsageError, match="invalid tap name"):
        check_ifname("a b")
    # argv bytes that are not UTF-8 arrive as lone surrogates: a usage error, not a traceback
    for name in ("\udcff\udcfe", "x" * 14 + "\udcff"):
        with pytest.raises(UsageError):
            check_ifname(name)


def test_mac_checks():
    assert check_mac("06:00:ac:10:00:02") == "06:00:AC:10:00:02"
    with pytest.raises(UsageError, match="multicast"):
        check_mac("01:00:00:00:00:01")
    with pytest.raises(UsageError, match="invalid MAC"):
        check_mac("06:00:ac:10:00")


def test_options_validation():
    with pytest.raises(UsageError, match="block size"):
        Options(prefix=31)
    with pytest.raises(UsageError, match="block size"):
        Options(prefix=23)
    with pytest.raises(UsageError, match="smaller than one"):
        Options(pool=IPv4Network("10.0.0.0/31"), prefix=30)
    with pytest.raises(UsageError, match="backend"):
        Options(backend="pf")


def test_options_roundtrip():
    o = Options(owner=Owner.parse("1000:1001"), mac="06:00:00:00:00:01", tap="tap7")
    assert Options.from_identity(o.identity()) == o


@pytest.mark.parametrize("text", ["x", "1:y", "-1", "1:-2", ""])
def test_owner_bad(text):
    with pytest.raises(UsageError, match="--owner"):
        Owner.parse(text)
