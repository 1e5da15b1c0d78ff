"""Packets through the real VMM: the probe's UDP datagrams leave Firecracker's virtio-net
device, are masqueraded out of the uplink and counted by ``fireroute stats``; and the
isolation fireroute sets up holds for them, beside the ``--allow-*`` controls that open it."""

from __future__ import annotations

import json
from collections import Counter

from fireroute.lab.sandbox import HOST_UPLINK_IP, INTERNET_IP
from tests.realvmm.harness import REALVMM_MARKS, Lab, UdpSink, assert_identity, probe_args

pytestmark = REALVMM_MARKS

PORT = 5000
COUNT = 40
SIZE = 200
HOST_PORT = 53


def test_nat_through_firecracker_and_the_counters(lab: Lab):
    rec = lab.up("vm1")
    fc = lab.firecracker("vm1")
    lab.fireroute("attach", "vm1", "--socket", fc.socket)
    sink = UdpSink(lab.sb.internet, INTERNET_IP, PORT)  # type: ignore[attr-defined]
    try:
        udp = f"{INTERNET_IP}:{PORT}"
        fc.boot(lab.kernel, probe_args(rec["boot_args"], udp=udp, count=COUNT, size=SIZE))
        probe = fc.wait()
        got = sink.datagrams()
    finally:
        sink.stop()
    assert_identity(probe, rec)
    assert probe.fields("udp")["sent"] == str(COUNT), probe
    # the internet namespace has no route to the guest pool: only NAT brings them there
    assert {(src, port) for src, port, _, _ in got} == {(HOST_UPLINK_IP, 40000)}
    assert sorted(int(marker.split()[1]) for _, _, marker, _ in got) == list(range(1, COUNT + 1))
    assert {size for *_, size in got} == {SIZE}

    (row,) = json.loads(lab.fireroute("stats", "vm1", "--json").stdout)
    pings = int(probe.fields("ping gw")["seq"])  # the tries it took
    assert row["counted"] is True
    assert row["tx_packets"] == COUNT + pings, (row, probe)
    # IP bytes: 20 + 8 + payload per datagram, 20 + 40 per echo request
    assert row["tx_bytes"] == COUNT * (28 + SIZE) + pings * 60, (row, probe)
    print(f"sink: {len(got)} datagrams from {got[0][0]}:{got[0][1]}; stats: {row}")


def test_isolation_through_firecracker_with_the_allow_controls(lab: Lab):
    """vm1 (nothing allowed) can reach neither vm2 nor a service on the host; vm3 and vm4
    (--allow-peers both, vm3 also --allow-host-port) reach each other and the service, over the
    same paths, at the same time."""
    recs = {
        "vm1": lab.up("vm1"),
        "vm2": lab.up("vm2"),
        "vm3": lab.up("vm3", "--allow-peers", "--allow-host-port", f"{HOST_PORT}/udp"),
        "vm4": lab.up("vm4", "--allow-peers"),
    }
    fcs = {name: lab.firecracker(name) for name in recs}
    for name, fc in fcs.items():
        lab.fireroute("attach", name, "--socket", fc.socket)
    for target in ("vm2", "vm4"):  # they linger, answering pings
        fcs[target].boot(lab.kernel, probe_args(recs[target]["boot_args"], linger_ms=6000))
    for target in ("vm2", "vm4"):
        fcs[target].wait_line("linger")
    sink = UdpSink(lab.sb.host, "0.0.0.0", HOST_PORT, idle=1.5)  # type: ignore[attr-defined]
    try:
        for prober, peer in (("vm1", "vm2"), ("vm3", "vm4")):
            rec = recs[prober]
            args = probe_args(
                rec["boot_args"],
                echo=recs[peer]["guest_ip"],
                udp=f"{rec['tap_ip']}:{HOST_PORT}",
                count=5,
            )
            fcs[prober].boot(lab.kernel, args)
        probes = {name: fcs[name].wait() for name in ("vm1", "vm3")}
        got = sink.datagrams()
    finally:
        sink.stop()
    for name in ("vm2", "vm4"):
        fcs[name].wait()
    for name, probe in probes.items():
        assert_identity(probe, recs[name])
        assert probe.fields("udp")["sent"] == "5", probe

    by_source = dict(Counter(src for src, *_ in got))
    assert by_source == {recs["vm3"]["guest_ip"]: 5}, got  # nothing from vm1
    assert probes["vm3"].ok(f"echo {recs['vm4']['guest_ip']}"), probes["vm3"]
    assert not probes["vm1"].ok(f"echo {recs['vm2']['guest_ip']}"), probes["vm1"]
    assert probes["vm1"].line(f"echo {recs['vm2']['guest_ip']} fail") is not None
    print(
        f"vm1 -> vm2: {probes['vm1'].line('echo')}; vm3 -> vm4: {probes['vm3'].line('echo')}; "
        f"host port {HOST_PORT}/udp got {by_source}"
    )
