"""A stateful property test against the real kernel: random sequences of up, down, gc, check,
restore and teardown over two state files, both backends and NAT, clone and bridge modes (each
state file with a bridge of its own), NAT nft VMs with IPv6 among them, with drift
injected behind fireroute's back (a tap deleted, a table or chain flushed, an element deleted)
and processes killed mid-run. After every step:

- ``check`` of a state file is clean exactly when nothing of it was damaged since its last
  ``restore`` (and a damage is always seen);
- foreign objects (another program's link, nft table and iptables rule) are byte-for-byte
  unchanged;
- no two VMs, of any state file, share an address block, a MAC (clones aside: they share
  their guest's by design) or a tap;
- every VM that is up holds its tap, and the kernel holds no fireroute link no lease accounts
  for once ``gc`` ran;
- the ``ip6`` table is there exactly while a VM with IPv6 is up (of either state file), IPv6
  forwarding is on then and as found once none is, a v6 VM's tap holds its gateway and its
  route, a v4-only NAT tap no IPv6 address or route (machine.py says it whole).

And, as a step of its own, packets: a NAT guest that is up (either backend) has its tap swapped
for a veth with a "guest" namespace behind it; its connection out is masqueraded (the server
sees the host's uplink address), and its connection to a service on the host itself is
refused. Then the tap is deleted and ``restore`` makes it again, and ``check`` is clean.

The rules and invariants are tests/reliability/machine.py's (shared with the run on the fake
kernel, tests/unit/test_property_fake.py); this file gives them the kernel.

CI runs a bounded number of examples (6 x 12 steps). The long run, 40 min 5 s here (commit
28c2326, nothing found):
``FIREROUTE_PROPERTY_EXAMPLES=180 FIREROUTE_PROPERTY_STEPS=25 .venv/bin/python -m pytest
tests/reliability/test_property.py``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from tempfile import mkdtemp

import pytest

from fireroute.want import tables
from tests.conftest import Host, needs_root, remove_clone_namespaces, sh
from tests.kernel.test_isolation import CLIENT, SERVER
from tests.reliability import machine

EXAMPLES = int(os.environ.get("FIREROUTE_PROPERTY_EXAMPLES", "6"))
STEPS = int(os.environ.get("FIREROUTE_PROPERTY_STEPS", "12"))
pytestmark = [
    pytest.mark.privileged,
    needs_root,
    # one pytest test runs every example: its limit grows with them (about 1 s a step here,
    # and shrinking a failure can take as long again)
    pytest.mark.timeout(300 + 6 * EXAMPLES * STEPS),
]
PROBES: list[int] = []
"""packet probes per example: the suite asserts that some ran"""


class Machine(machine.Machine):
    def __init__(self) -> None:
        super().__init__()
        from fireroute.lab.sandbox import Sandbox

        self.root = Path(mkdtemp(prefix="frprop-"))
        self.sb = Sandbox(prefix="frp").__enter__()
        self.host = Host(self.sb.host, self.sb.internet, self.root / "A" / "state.db")
        self.host.sh(
            "ip link add fr-foreign type veth peer name other0 && "
            "nft add table ip theirs && nft add chain ip theirs c '{ type filter hook "
            "forward priority 10; policy accept; }' && nft add rule ip theirs c counter accept && "
            "iptables-nft -A FORWARD -i docker0 -j ACCEPT"
        )
        self.foreign = self.foreign_state()
        self.forwarding6_before = self.forwarding6()
        self.probes = 0
        self.servers = [  # the "internet", and a service on the host's own uplink address
            self.serve(self.sb.internet, "203.0.113.1:80"),
            self.serve(self.sb.host, "203.0.113.2:8080"),
        ]

    @staticmethod
    def serve(ns: str, spec: str) -> subprocess.Popen:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, spec]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    def teardown(self) -> None:
        PROBES.append(self.probes)
        try:
            for p in self.servers:
                p.kill()
                p.wait()
            remove_clone_namespaces(self.root)
        finally:
            self.sb.__exit__(None, None, None)

    # -- the host: the kernel, in the sandbox's namespaces ----------------------------------
    def fireroute(self, sf: str, args: tuple[str, ...], fault: str):  # noqa: ANN201
        env = {"FIREROUTE_STATE": str(self.root / sf / "state.db")}
        if fault:
            env["FIREROUTE_FAULT"] = fault
        return self.host.fireroute(*args, check=False, env=env)

    def links(self) -> set[str]:
        return set(self.host.links())

    def foreign_state(self) -> tuple:
        links = json.loads(self.host.run("ip", "-j", "-d", "link", "show").stdout)
        mine = {
            d["ifname"]: (d.get("address"), d.get("ifalias"), d.get("master"))
            for d in links
            if d["ifname"] in ("fr-foreign", "other0", "lo", "up0")
        }
        # -s: without counter values (the packets step sends traffic through its chain)
        theirs = self.host.run("nft", "-s", "list", "table", "ip", "theirs").stdout
        rules = [r for r in self.host.iptables_rules() if "fireroute" not in r]
        return mine, theirs, rules

    def drop_tap(self, dev: str) -> None:
        self.host.run("ip", "link", "del", dev)

    def flush(self, what: str) -> None:
        if what == "flush-table":
            self.host.run("nft", "flush", "table", "ip", "firecracker")
        else:
            self.host.run("nft", "flush", "chain", "ip", "firecracker", "forward")

    def drop_masq(self, src: str, uplink: str) -> None:
        element = f'{{ {src} . "{uplink}" }}'
        self.host.run("nft", "delete", "element", "ip", "firecracker", "masq", element, check=False)

    def add_element(self, set_name: str, value: str, tag: str) -> None:
        what = f'{set_name} {{ {value} comment "{tag}" }}'
        self.host.sh(f"nft -f - <<'EOF'\nadd element ip firecracker {what}\nEOF\n")

    def set_held(self, set_name: str) -> bool:
        held = self.host.run("nft", "list", "set", "ip", "firecracker", set_name, check=False)
        return held.returncode == 0

    def probe(self, sf: str, name: str) -> None:
        """Packets: the tap swapped for a veth with a "guest" namespace behind it; its
        connection out is masqueraded, the one to the host's own service refused; then
        ``restore`` makes the tap again and ``check`` is clean."""
        vm = next(v for v in self.ls(sf) if v["name"] == name)
        tap, ns = vm["host_dev"], f"{self.sb.host}-g"
        self.host.sh(
            f"ip link del {tap} && ip netns add {ns} && "
            f"ip link add {tap} type veth peer name eth0 netns {ns} && "
            f"ip addr add {vm['tap_ip']}/{vm['prefix']} dev {tap} && ip link set {tap} up"
        )
        try:
            sh("ip", "-n", ns, "addr", "add", f"{vm['guest_ip']}/{vm['prefix']}", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", vm["tap_ip"])

            def connect(addr: str, port: str) -> str:
                argv = ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, addr, port]
                return sh(*argv, check=False).stdout.strip()

            self.probes += 1
            assert connect("203.0.113.1", "80") == "hello 203.0.113.2", vm  # masqueraded
            assert connect("203.0.113.2", "8080").startswith("FAIL"), vm  # the host is closed
        finally:
            sh("ip", "netns", "del", ns, check=False)
            self.host.run("ip", "link", "del", tap, check=False)
        p = self.fr(sf, "restore")
        assert p.returncode == 0, p.stderr
        assert self.fr(sf, "check").returncode == 0

    def table_exists(self) -> bool:
        return (
            self.host.run("nft", "list", "table", "ip", "firecracker", check=False).returncode == 0
        )

    def table6_exists(self) -> bool:
        argv = ["nft", "list", "table", "ip6", "firecracker"]
        return self.host.run(*argv, check=False).returncode == 0

    def forwarding6(self) -> str:
        return self.host.sh("cat /proc/sys/net/ipv6/conf/all/forwarding").stdout.strip()

    def ipv6_of(self, dev: str) -> tuple[set[str], set[str]]:
        addrs = json.loads(self.host.run("ip", "-6", "-j", "addr", "show", "dev", dev).stdout)
        routes = json.loads(self.host.run("ip", "-6", "-j", "route", "show", "dev", dev).stdout)
        cidrs = {f"{a['local']}/{a['prefixlen']}" for d in addrs for a in d.get("addr_info", [])}
        return cidrs, {r["dst"] for r in routes if not r.get("dst", "fe80::").startswith("fe80::")}

    def chains_intact(self) -> bool:
        from fireroute.repair import parse_chains

        text = self.host.run("nft", "list", "table", "ip", "firecracker").stdout
        have = parse_chains(text)
        return have == tables.chains(tables.parts_of(have))


Machine.TestCase.settings = machine.run_settings(
    EXAMPLES, STEPS, seeded=not os.environ.get("FIREROUTE_PROPERTY_EXAMPLES")
)


class TestStateMachine(Machine.TestCase):  # type: ignore[misc,valid-type]
    def runTest(self) -> None:  # noqa: N802 - unittest's name
        PROBES.clear()
        super().runTest()
        assert sum(PROBES) > 0, "no example sent packets: the packet probe never ran"
