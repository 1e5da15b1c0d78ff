"""The podman harness (tests/cni/podman.py), proven with Debian's own CNI plugins.

The positive control is the reference ``ptp`` plugin (host-local IPAM, ``ipMasq``): a container
gets an address from the conflist's subnet, reaches the sandbox's "internet" through NAT (the
server there sees the host's uplink address), and once it is removed the host side is clean
again (no veth, no NAT chain, no lease, an empty CNI result cache). The negative controls show
that a broken network is reported, not ignored: a plugin type that does not exist, and a
plugin whose ADD fails. Later tests run fireroute's own CNI plugin through the same harness.

Everything runs inside a throwaway Sandbox; the machine's own namespaces are never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fireroute.lab.sandbox import HOST_UPLINK_IP, INTERNET_IP, Sandbox
from tests.cni.podman import Podman
from tests.conftest import needs_root

pytestmark = [pytest.mark.privileged, needs_root]

SUBNET = ipaddress.ip_network("10.99.0.0/24")  # exists only inside the throwaway namespaces

PTP = {
    "cniVersion": "1.0.0",
    "name": "frptp",
    "plugins": [
        {
            "type": "ptp",
            "ipMasq": True,
            "ipam": {
                "type": "host-local",
                "subnet": str(SUBNET),
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }
    ],
}

MISSING = {"cniVersion": "1.0.0", "name": "frmissing", "plugins": [{"type": "fr-no-such-plugin"}]}

FAILING = {"cniVersion": "1.0.0", "name": "frfailing", "plugins": [{"type": "fr-failing-add"}]}

# a plugin that speaks CNI's VERSION but refuses every ADD, logging each call it gets
FAILING_PLUGIN = textwrap.dedent(
    """\
    #!/bin/sh
    echo "$CNI_COMMAND|$CNI_CONTAINERID|$CNI_IFNAME|$CNI_NETNS|$CNI_ARGS" >> "$0.log"
    case "$CNI_COMMAND" in
    VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}' ;;
    ADD) cat >/dev/null
         echo '{"cniVersion":"1.0.0","code":100,"msg":"fr-failing-add refuses ADD"}'; exit 1 ;;
    *) cat >/dev/null ;;
    esac
    """
)


@dataclass
class Lab:
    sb: Sandbox
    pm: Podman
    plugins: Path

    def host(self, *argv: str) -> str:
        return self.sb.exec(self.sb.host, *argv).stdout

    def veths(self) -> set[str]:
        return {
            link["ifname"]
            for link in json.loads(self.host("ip", "-j", "link", "show", "type", "veth"))
        }

    def nat_rules(self) -> list[str]:
        return [
            r
            for r in self.host("iptables-nft-save", "-t", "nat").splitlines()
            if r.startswith("-A")
        ]

    def leases(self, network: str) -> list[str]:
        d = self.pm.cni_dir / "networks" / network
        names = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
        return [n for n in names if n != "lock" and not n.startswith("last_reserved_ip")]

    def assert_host_clean(self) -> None:
        """Nothing of any container is left on the host side."""
        assert self.veths() == {"up0"}  # only the sandbox's own uplink
        assert self.nat_rules() == []
        assert self.leases(PTP["name"]) == []
        assert self.pm.cached_results() == []
        assert self.pm.host("ls", "/run/netns", check=True).stdout.split() == []
        assert self.pm.containers() == []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/install.sh installs it)")
    plugins = tmp_path_factory.mktemp("cni-plugins")
    failing = plugins / "fr-failing-add"
    failing.write_text(FAILING_PLUGIN)
    failing.chmod(0o755)
    with Sandbox(prefix="frpod") as sb:
        sb.start_http()
        with Podman(f"/var/run/netns/{sb.host}", PTP, [plugins, "/usr/lib/cni"]) as pm:
            yield Lab(sb, pm, plugins)


def _eth0_addr(ip_output: str) -> ipaddress.IPv4Interface:
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", ip_output)
    assert len(found) == 1, ip_output
    return ipaddress.IPv4Interface(found[0])


def test_ptp_container_gets_an_address_and_reaches_the_internet_through_nat(lab: Lab) -> None:
    script = (
        "ip -4 -o addr show dev eth0; echo @@@;"
        f" wget -q -O - http://{INTERNET_IP}/; echo @@@;"
        f" ping -c 1 -W 5 {INTERNET_IP}"
    )
    res = lab.pm.run("sh", "-c", script)
    assert res.returncode == 0, res.stderr + res.stdout
    addr, http, ping = res.stdout.split("@@@\n")
    assert _eth0_addr(addr).ip in SUBNET
    assert _eth0_addr(addr).network == SUBNET
    # the server sees the host's uplink address: the ptp plugin's masquerade did its work
    assert http.strip() == f"hello-from-internet client={HOST_UPLINK_IP}"
    assert "1 packets received" in ping
    # podman run --rm is back: the plugin's DEL ran and left nothing behind
    lab.assert_host_clean()


def test_long_running_container_and_its_teardown(lab: Lab) -> None:
    lab.pm.start("ctl-long")
    try:
        addr = _eth0_addr(lab.pm.exec("ctl-long", "ip", "-4", "-o", "addr", "show", "eth0").stdout)
        net = lab.pm.inspect("ctl-long")["NetworkSettings"]["Networks"][PTP["name"]]
        assert net["IPAddress"] == str(addr.ip) and addr.ip in SUBNET
        # while it runs, the host side holds exactly what the plugin made for it
        assert len(lab.veths() - {"up0"}) == 1
        assert any("MASQUERADE" in r for r in lab.nat_rules())
        assert lab.leases(PTP["name"]) == [str(addr.ip)]
        (cached,) = lab.pm.cached_results()
        assert json.loads(cached.read_text())["containerId"] in lab.pm.inspect("ctl-long")["Id"]
        got = lab.pm.exec("ctl-long", "wget", "-q", "-O", "-", f"http://{INTERNET_IP}/")
        assert got.stdout.strip() == f"hello-from-internet client={HOST_UPLINK_IP}", got.stderr
    finally:
        lab.pm.rm("ctl-long")
    lab.assert_host_clean()


def test_missing_plugin_type_fails_and_says_so(lab: Lab) -> None:
    lab.pm.add_network(MISSING)
    try:
        res = lab.pm.run("true", network=MISSING["name"])
    finally:
        (lab.pm.dir / "net.d" / "frmissing.conflist").unlink()
    assert res.returncode != 0
    # podman 4.3 drops a conflist whose plugin it cannot find when it loads the networks (a
    # warning), so run fails on the network, not at ADD
    assert "failed to find plugin" in res.stderr and "fr-no-such-plugin" in res.stderr, res.stderr
    assert "network not found" in res.stderr, res.stderr
    lab.assert_host_clean()


def test_failing_add_fails_the_run_and_podman_cleans_up(lab: Lab) -> None:
    lab.pm.add_network(FAILING)
    log = lab.plugins / "fr-failing-add.log"
    try:
        res = lab.pm.run("true", network=FAILING["name"])
    finally:
        (lab.pm.dir / "net.d" / "frfailing.conflist").unlink()
    assert res.returncode != 0
    assert "fr-failing-add refuses ADD" in res.stderr, res.stderr
    calls = [line.split("|") for line in log.read_text().splitlines()]
    commands = [c[0] for c in calls]
    # VERSION first, then the ADD that fails, then the DEL podman sends to clean up
    assert commands[0] == "VERSION" and "ADD" in commands, commands
    assert commands.index("DEL") > commands.index("ADD"), commands
    add = calls[commands.index("ADD")]
    assert add[2] == "eth0" and add[3].startswith("/run/netns/"), add
    assert "IgnoreUnknown=1" in add[4] and "K8S_POD_NAME=" in add[4], add
    lab.assert_host_clean()


def test_harness_mounts_are_its_own(lab: Lab) -> None:
    """podman's /run, /var/lib (with the CNI cache a bind of the harness's cni_dir) and
    /dev/shm are the harness's, and it holds no copy of the machine's netns mounts (which
    would keep the sandbox's namespaces alive)."""
    mounts = lab.pm.host("cat", "/proc/self/mountinfo", check=True).stdout
    targets = [line.split()[4] for line in mounts.splitlines()]
    machine = {f"/run/netns/{name}" for name in os.listdir("/var/run/netns")}
    assert f"/run/netns/{lab.sb.host}" in machine
    assert not machine & set(targets), targets
    assert {"/run", "/var/lib", "/var/lib/cni", "/dev/shm"} <= set(targets), targets
    probe = lab.pm.cni_dir / "probe"
    probe.write_text("mine\n")
    try:
        assert lab.pm.host("cat", "/var/lib/cni/probe").stdout == "mine\n"
    finally:
        probe.unlink()


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (conmon is reparented to the holder, pid 1 of the
    harness's pid namespace; the container runs in a pid namespace of its own below that)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_close_removes_everything(lab: Lab) -> None:
    """A second harness on the same host, closed with a container still running: the
    container's network is torn down, every process of the harness (conmon, the container)
    is gone, and so is its state directory."""
    pm = Podman(f"/var/run/netns/{lab.sb.host}", PTP)
    with pm:
        pm.start("ctl-left-running")
        state = pm.dir
        procs = _descendants(pm.holder_pid)
        comms = sorted(Path(f"/proc/{p}/comm").read_text().strip() for p in procs)
        assert {"cat", "conmon", "sleep"} <= set(comms), comms  # holder, conmon, container
        assert len(lab.veths() - {"up0"}) == 1
    assert not state.exists()
    assert [p for p in procs if _alive(p)] == []
    assert lab.veths() == {"up0"}
    assert lab.nat_rules() == []
