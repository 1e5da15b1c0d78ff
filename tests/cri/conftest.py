"""The containerd harness's node for the CRI tests: a throwaway node namespace (with an
"internet" behind its uplink), containerd inside it with docs/cni.md's Kubernetes conflist, and
the guest image of the booted-guest tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fireroute.lab.sandbox import Sandbox
from tests.cni.runtime import LAUNCHER, leftovers, state_vms
from tests.conftest import Host
from tests.cri.containerd import Containerd
from tests.e2e.conftest import image  # noqa: F401 (the booted-guest test's fixture)

LOOPBACK = "/usr/lib/cni/loopback"  # containerd adds its own loopback network to every pod
HOST_LOCAL = "/usr/lib/cni/host-local"
SUBNET = "10.22.0.0/16"  # the node's pod CIDR (host-local's gateway: .1)
PLUGINS = {"fireroute": str(LAUNCHER), "loopback": LOOPBACK, "host-local": HOST_LOCAL}


def conflist(state: Path, name: str = "frcri") -> dict:
    """docs/cni.md's Kubernetes conflist (with a state file of the test's): addresses from
    host-local in the node's pod CIDR, pods reaching each other, hostPorts published."""
    return {
        "cniVersion": "1.0.0",  # containerd 1.6's libcni knows no newer
        "name": name,
        "plugins": [
            {
                "type": "fireroute",
                "state": str(state),
                "tapName": "tap0",
                "allowPeers": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]]},
                "capabilities": {"portMappings": True},
            }
        ],
    }


@dataclass
class Node:
    host: Host
    ct: Containerd

    def cached(self, pod: str) -> dict:
        """libcni's cache entry of fireroute's attachment of ``pod`` (result, capability args)."""
        (path,) = [p for p in self.ct.cached_results if p.name == f"frcri-{pod}-eth0"]
        return json.loads(path.read_text())

    def check(self) -> None:
        """``fireroute check`` passes, run where containerd runs (the pods' namespaces are
        pinned in its mounts)."""
        env = f"FIREROUTE_STATE={self.host.state}"
        p = self.ct.host("env", env, str(LAUNCHER), "check", check=False)
        assert p.returncode == 0, p.stdout + p.stderr

    def empty(self) -> None:
        """Nothing of fireroute's is left: no tagged link or set element, no VM in the state
        file, no cached result, no pod."""
        assert leftovers(self.host) == [] and state_vms(self.host.state) == []
        assert self.ct.cached_results == [] and self.ct.pods() == []
        assert self.leases() == []

    def leases(self) -> list[str]:
        """The addresses host-local has leased (its files in the holder's /var/lib)."""
        d = "/var/lib/cni/networks/frcri"
        names = self.ct.host("sh", "-c", f"ls {d} 2>/dev/null || true").stdout.split()
        return [n for n in names if n[0].isdigit()]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("cri")
    with Sandbox(prefix="frcri") as sb:
        sb.start_http()
        with Containerd(f"/var/run/netns/{sb.host}", conflist(tmp / "state.db"), PLUGINS) as ct:
            yield Node(Host(sb.host, sb.internet, tmp / "state.db"), ct)
