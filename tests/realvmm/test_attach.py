"""fireroute configuring a real, not-yet-started Firecracker through its API socket: ``up`` then
``attach``, and ``up --socket``; the probe guest boots with the MAC and ``ip=`` fireroute
gave, pings its gateway (the tap), and the host reaches each of two guests running at once.
``attach --mtu`` and ``--boot-source`` against whatever version this Firecracker is."""

from __future__ import annotations

import json

from tests.realvmm.harness import REALVMM_MARKS, Lab, Probe, assert_identity, probe_args

pytestmark = REALVMM_MARKS


def tap_mac(lab: Lab, tap: str) -> str:
    out = lab.sb.exec(lab.sb.host, "ip", "-j", "link", "show", tap).stdout  # type: ignore[attr-defined]
    return json.loads(out)[0]["address"]


def host_ping(lab: Lab, address: str) -> bool:
    p = lab.sb.exec(lab.sb.host, "busybox", "ping", "-c1", "-W2", address, check=False)  # type: ignore[attr-defined]
    return p.returncode == 0


def test_up_attach_and_up_socket_two_guests_at_once(lab: Lab):
    rec1 = lab.up("vm1")
    fc1 = lab.firecracker("vm1")
    attached = lab.fireroute("attach", "vm1", "--socket", fc1.socket)
    assert "interface eth0 on tap fr-vm1" in attached.stdout
    fc2 = lab.firecracker("vm2")
    rec2 = lab.up("vm2", "--socket", fc2.socket)  # up and attach in one
    assert rec1["tap"] != rec2["tap"]

    for fc, rec in ((fc1, rec1), (fc2, rec2)):
        fc.boot(lab.kernel, probe_args(rec["boot_args"], linger_ms=2500))
    for fc in (fc1, fc2):
        fc.wait_line("linger")
    # both guests run now, each on its own tap: the host reaches each
    reached = {rec["name"]: host_ping(lab, rec["guest_ip"]) for rec in (rec1, rec2)}
    assert reached == {"vm1": True, "vm2": True}
    for fc, rec in ((fc1, rec1), (fc2, rec2)):
        probe = fc.wait()
        assert_identity(probe, rec)
        gateway = probe.line("arp gw")
        assert gateway is not None and gateway.endswith(tap_mac(lab, rec["tap"])), probe
        assert int(probe.fields("rx")["ping_answered"]) >= 1, probe  # it answered the host
        print(f"{rec['name']}: {probe.line('ping gw')}; {probe.line('done')}")


def test_attach_mtu_and_boot_source_as_this_version_allows(lab: Lab):
    rec = lab.up("vm1")
    fc = lab.firecracker("vm1")
    version = fc.client.version()
    shown = ".".join(map(str, version))

    # --boot-source: merges ip= where the VMM can say its boot source, else one clear line
    # and nothing sent (then the boot source is given with fireroute's ip= by hand)
    fc.client.put(
        "/boot-source", {"kernel_image_path": str(lab.kernel), "boot_args": probe_args("")}
    )
    merged = lab.fireroute("attach", "vm1", "--socket", fc.socket, "--boot-source", check=False)
    if merged.returncode == 0:
        print(f"--boot-source on {shown}: {merged.stdout.strip()}")
    else:
        err = merged.stderr.strip()
        assert merged.returncode == 1 and "\n" not in err and "Traceback" not in err, err
        assert f"firecracker {shown} has no GET /vm/config" in err and "nothing was sent" in err
        print(f"--boot-source on {shown}: {err}")
        fc.client.put(
            "/boot-source",
            {"kernel_image_path": str(lab.kernel), "boot_args": probe_args(rec["boot_args"])},
        )

    # --mtu: sent where the field exists, else left out with a warning naming the version
    with_mtu = lab.fireroute("attach", "vm1", "--socket", fc.socket, "--mtu", "1400")
    if version < (1, 16, 0):
        assert f"firecracker {shown} has no interface mtu (needs 1.16.0)" in with_mtu.stderr
    else:
        assert "mtu 1400" in with_mtu.stdout, with_mtu.stdout
    fc.machine_config()
    fc.start_instance()
    probe = fc.wait()
    assert_identity(probe, rec)
    assert rec["boot_args"] in (probe.line("cmdline") or ""), probe
    print(f"--mtu on {shown}: {with_mtu.stderr.strip() or 'sent'}; {probe.line('ping gw')}")


def test_without_the_interface_the_guest_has_no_network(lab: Lab):
    """Control for the tests above: the same probe on a Firecracker nobody attached finds no
    NIC, so a passing probe means fireroute's PUT reached Firecracker."""
    rec = lab.up("vm1")
    fc = lab.firecracker("vm1")
    fc.boot(lab.kernel, probe_args(rec["boot_args"]))
    probe: Probe = fc.wait()
    assert probe.line("virtio") is None and not probe.ok("ping gw"), probe
    assert probe.line("error") is not None, probe
