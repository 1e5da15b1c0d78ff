"""Calling the plugin the way a runtime does: the program (the same launcher that
/opt/cni/bin/fireroute is) with the CNI environment, the network configuration on stdin, run in
the test's host namespace; each attachment's namespace is one the test made (``ip netns add``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

from tests.conftest import REPO, Host, sh
from tests.kernel.tapwire import Wired

LAUNCHER = REPO / "scripts" / "fireroute"


@dataclass
class Answer:
    rc: int
    doc: dict
    stderr: str


@dataclass
class Runtime:
    host: Host
    conf: dict = field(default_factory=dict)
    made: list[str] = field(default_factory=list)

    def config(self, **extra: object) -> dict:
        return {
            "cniVersion": "1.1.0",
            "name": "fcnet",
            "type": "fireroute",
            "state": str(self.host.state),
            **self.conf,
            **extra,
        }

    def netns(self, name: str) -> str:
        """A container's namespace, removed by ``close``."""
        full = f"{self.host.ns}-{name}"
        sh("ip", "netns", "add", full)
        self.made.append(full)
        return f"/var/run/netns/{full}"

    def call(
        self,
        command: str,
        conf: dict | None = None,
        *,
        container: str = "",
        netns: str = "",
        ifname: str = "veth0",
        env: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        full = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
        }
        if container:
            full["CNI_CONTAINERID"] = container
        if netns:
            full["CNI_NETNS"] = netns
        if ifname:
            full["CNI_IFNAME"] = ifname
        full.update(env or {})
        data = raw if raw is not None else json.dumps(conf or self.config()).encode()
        p = subprocess.run(
            ["nsenter", f"--net=/var/run/netns/{self.host.ns}", str(LAUNCHER)],
            input=data,
            capture_output=True,
            env=full,
            timeout=120,
        )
        out = p.stdout.decode()
        doc = json.loads(out) if out.strip() else {}
        return Answer(p.returncode, doc, p.stderr.decode())

    def add(self, container: str, netns: str, **kw: object) -> dict:
        a = self.call("ADD", container=container, netns=netns, **kw)  # type: ignore[arg-type]
        assert a.rc == 0 and not a.stderr, (a.doc, a.stderr)
        return a.doc

    def in_ns(self, netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("nsenter", f"--net={netns}", *argv, check=check)

    def ns_links(self, netns: str) -> dict[str, dict]:
        out = self.in_ns(netns, "ip", "-j", "-d", "link", "show").stdout
        return {d["ifname"]: d for d in json.loads(out)}

    def drop_netns(self, netns: str) -> None:
        """Delete a namespace as a runtime does, then wait until the kernel has destroyed it:
        that runs after ``ip netns del`` returns (a work queue), and the host ends of its veths
        go only then, which is what ``gc`` takes as the proof that it is gone."""
        ends = [
            d["link_index"]
            for d in self.ns_links(netns).values()
            if d.get("linkinfo", {}).get("info_kind") == "veth" and "link_index" in d
        ]
        sh("ip", "netns", "del", netns.rsplit("/", 1)[1])
        deadline = time.monotonic() + 20
        while any(d.get("ifindex") in ends for d in self.host.links().values()):
            assert time.monotonic() < deadline, f"the host ends of {netns} outlived it"
            time.sleep(0.05)

    def close(self) -> None:
        for name in self.made:
            sh("ip", "netns", "del", name, check=False)


def leftovers(h: Host) -> list[str]:
    """What fireroute could have left in the host namespace: tagged links, set elements."""
    found = [
        f"link {name}"
        for name, link in h.links().items()
        if str(link.get("ifalias", "")).startswith("fireroute:")
    ]
    for item in h.nft():
        s = item.get("set")
        if s and s.get("elem"):
            found.append(f"elements in set {s['name']}: {s['elem']}")
    return found


def state_vms(state: Path) -> list[str]:
    if not state.exists():
        return []
    import sqlite3

    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT name FROM vms")]
    finally:
        db.close()


def wire_guest(wired: Wired, result: dict, pod: str) -> str:
    """A guest namespace on the pod's tap, configured from the result as the go SDK's ``ip=``
    would configure a VM: the VM interface's MAC, its one IP, the gateway as default route."""
    (vm_if,) = [i for i in result["interfaces"] if i.get("sandbox") == pod]
    (ip,) = [ip for ip in result["ips"] if result["interfaces"][ip["interface"]] is vm_if]
    guest = wired.guest(vm_if["name"], vm_if["mac"])
    sh("ip", "-n", guest, "addr", "add", str(IPv4Interface(ip["address"])), "dev", "eth0")
    sh("ip", "-n", guest, "route", "add", "default", "via", ip["gateway"])
    return guest
