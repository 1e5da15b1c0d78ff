"""What a deployment relies on beyond the packets: a jailed Firecracker (an unprivileged uid,
no capabilities) opens the tap fireroute made for that uid and no other uid can; and the
rate limits fireroute sends, at attach and by PATCH, slow the guest's own datagrams as
configured (the probe measures its send time; a ratio against an unlimited run)."""

from __future__ import annotations

from fireroute.lab.sandbox import INTERNET_IP
from tests.realvmm.harness import REALVMM_MARKS, Jail, Lab, assert_identity, probe_args

pytestmark = REALVMM_MARKS

OWNER = 4242
STRANGER = 4243
COUNT = 200
SIZE = 1000
RATE = 100_000  # bytes/s
#: What Firecracker charges per datagram: 12 bytes of virtio-net header, Ethernet, IP, UDP.
FRAME = 12 + 14 + 20 + 8 + SIZE
#: A silent address on the uplink's subnet: the probe's echo to it waits 3 x 1 s.
SILENT = "203.0.113.99"


def test_a_jailed_firecracker_opens_the_tap_of_its_uid_only(lab: Lab):
    rec = lab.up("vm1", "--owner", f"{OWNER}:{OWNER}")
    stranger = lab.firecracker("vm1-other", jail=Jail(STRANGER))
    refused = lab.fireroute("attach", "vm1", "--socket", stranger.socket, check=False)
    assert refused.returncode == 1, refused
    err = refused.stderr.strip()
    assert "firecracker answered 400 to PUT /network-interfaces/eth0" in err and "\n" not in err
    assert "fr-vm1" in err, err
    print(f"uid {STRANGER}: {err}")
    stranger.stop()

    owner = lab.firecracker("vm1", jail=Jail(OWNER))
    lab.fireroute("attach", "vm1", "--socket", owner.socket)
    owner.boot(lab.kernel, probe_args(rec["boot_args"]))
    probe = owner.wait()
    assert_identity(probe, rec)
    print(f"uid {OWNER}: {probe.line('ping gw')}")


def udp_time(lab: Lab, name: str, *attach_flags: str, patch: tuple[str, ...] = ()) -> float:
    """Seconds the probe took to hand COUNT datagrams to the device; ``patch``: flags of a
    ``fireroute limit`` sent after the guest started, while it waits on a silent echo."""
    rec = lab.up(name)
    fc = lab.firecracker(name)
    lab.fireroute("attach", name, "--socket", fc.socket, *attach_flags)
    udp = f"{INTERNET_IP}:9"  # nothing listens: only the sending is measured
    echo = SILENT if patch else None
    fc.boot(lab.kernel, probe_args(rec["boot_args"], echo=echo, udp=udp, count=COUNT, size=SIZE))
    if patch:
        fc.wait_line("ping gw")
        lab.fireroute("limit", name, "--socket", fc.socket, *patch)
    probe = fc.wait()
    assert_identity(probe, rec)
    if patch:
        assert probe.line(f"echo {SILENT} fail") is not None, probe  # the PATCH came before
    udp_fields = probe.fields("udp")
    assert udp_fields["sent"] == str(COUNT), probe
    return int(udp_fields["us"]) / 1e6


def test_rate_limits_at_attach_and_by_patch(lab: Lab):
    free = udp_time(lab, "free")
    at_attach = udp_time(lab, "attach", "--tx-rate", f"{RATE}B")
    patched = udp_time(lab, "patch", patch=("--tx-rate", f"{RATE}B"))
    # the bucket starts full (RATE bytes), then refills at RATE per second
    expected = (COUNT * FRAME - RATE) / RATE
    print(
        f"{COUNT} x {SIZE} B: no limit {free:.3f}s, --tx-rate {RATE}B at attach "
        f"{at_attach:.3f}s, by PATCH {patched:.3f}s (the limiter allows {expected:.3f}s)"
    )
    assert free < expected / 3
    for measured in (at_attach, patched):
        assert 0.95 * expected <= measured <= 1.2 * expected + free
