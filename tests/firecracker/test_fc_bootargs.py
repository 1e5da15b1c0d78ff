"""set_ip_arg: replace the kernel ip= argument, keep everything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fireroute.firecracker.bootargs import get_ip_arg, set_ip_arg, split_cmdline

IP = "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"
OLD = "ip=10.0.0.2::10.0.0.1:255.255.255.252::eth0:off"


@pytest.mark.parametrize(
    "before, ip_arg, after",
    [
        ("", IP, IP),
        (
            "console=ttyS0 reboot=k panic=1 pci=off",
            IP,
            f"console=ttyS0 reboot=k panic=1 pci=off {IP}",
        ),
        (f"console=ttyS0 {OLD} reboot=k", IP, f"console=ttyS0 {IP} reboot=k"),
        (f"{OLD} console=ttyS0 ip=dhcp", IP, f"{IP} console=ttyS0"),
        (f"console=ttyS0 {OLD} panic=1", None, "console=ttyS0 panic=1"),
        ("console=ttyS0", None, "console=ttyS0"),
        ("console=ttyS0 -- ip=for-init x", IP, f"console=ttyS0 {IP} -- ip=for-init x"),
        (f"{OLD} -- ip=for-init", None, "-- ip=for-init"),
        ('dyndbg="file net.c +p" console=ttyS0', IP, f'dyndbg="file net.c +p" console=ttyS0 {IP}'),
        ('foo="ip=inside quotes"  ip=x', IP, f'foo="ip=inside quotes" {IP}'),
        ("vip=1 sip=2 myip=3", IP, f"vip=1 sip=2 myip=3 {IP}"),
        ("console=ttyS0\tpanic=1\n", IP, f"console=ttyS0 panic=1 {IP}"),
    ],
)
def test_set_ip_arg_golden(before, ip_arg, after):
    assert set_ip_arg(before, ip_arg) == after


def test_unchanged_input_is_returned_verbatim():
    odd = f"console=ttyS0   {IP}\tpanic=1"
    assert set_ip_arg(odd, IP) is odd
    assert set_ip_arg("  console=ttyS0  ", None) == "  console=ttyS0  "


@pytest.mark.parametrize("bad", ["172.16.0.2::172.16.0.1", "ip=", "ip=a b", 'ip="x"', "IP=x", 5])
def test_bad_ip_arg(bad):
    with pytest.raises(ValueError, match="invalid ip argument"):
        set_ip_arg("console=ttyS0", bad)


def test_get_ip_arg():
    assert get_ip_arg(f"a {OLD} b {IP} -- ip=init") == IP
    assert get_ip_arg("a b") is None


def test_split_cmdline_keeps_quotes():
    assert split_cmdline(' a="b c"  d "e f" ') == ['a="b c"', "d", '"e f"']


token = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters='"'),
    min_size=1,
    max_size=12,
)


@given(st.lists(token, max_size=8), st.sampled_from([IP, OLD, None]))
def test_other_arguments_kept_in_order(tokens, ip_arg):
    before = " ".join(tokens)
    after = set_ip_arg(before, ip_arg)
    kernel_before = tokens[: tokens.index("--")] if "--" in tokens else tokens
    rest_before = tokens[len(kernel_before) :]
    out = split_cmdline(after)
    kernel_after = out[: out.index("--")] if "--" in out else out
    assert [t for t in kernel_after if not t.startswith("ip=")] == [
        t for t in kernel_before if not t.startswith("ip=")
    ]
    assert out[len(kernel_after) :] == rest_before
    assert [t for t in kernel_after if t.startswith("ip=")] == ([ip_arg] if ip_arg else [])
    assert set_ip_arg(after, ip_arg) == after  # idempotent
