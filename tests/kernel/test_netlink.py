"""The in-process route lookup answers what ``ip -j route get fibmatch`` answers, on real
routes of every kind, inside a throwaway namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address

from tests.conftest import REPO, Host, needs_root

pytestmark = needs_root

ADDRS = [
    "240.0.0.1",  # only the default route covers it
    "203.0.113.7",  # the uplink's subnet
    "203.0.113.2",  # the uplink's own address (local table)
    "10.9.0.1",  # an address of a veth link
    "10.9.0.77",  # that link's /24
    "10.8.3.4",  # a route via a gateway
    "10.7.0.9",  # blackhole
    "10.6.0.5",  # unreachable /32
    "10.6.1.1",  # prohibit
    "10.5.1.1",  # policy routing: a rule sends it to table 100
    "127.0.0.1",  # loopback (local table)
]


def normal(doc: object) -> tuple | None:
    if not doc:
        return None
    r = doc[0]  # type: ignore[index]
    return (r.get("dst"), r.get("dev"), r.get("type", "unicast"), r.get("table", "main"))


def test_fib_match_agrees_with_ip(host: Host) -> None:
    for cmd in (
        "link add d9 type veth peer name d9p",
        "addr add 10.9.0.1/24 dev d9",
        "link set d9 up",
        "link set d9p up",
        "link set lo up",
        "route add 10.8.0.0/16 via 203.0.113.1",
        "route add blackhole 10.7.0.0/24",
        "route add unreachable 10.6.0.5/32",
        "route add prohibit 10.6.1.0/24",
        "route add 10.5.0.0/16 dev d9 table 100",
        "rule add to 10.5.0.0/16 table 100",
    ):
        host.run("ip", *cmd.split())
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from fireroute.kernel.netlink import fib_match;"
        "print(json.dumps(fib_match([int(x) for x in sys.argv[2:]])))"
    )
    ours = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", code,
         str(REPO / "src"), *(str(int(IPv4Address(a))) for a in ADDRS)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    got = [normal(d) for d in json.loads(ours.stdout)]
    want = []
    for a in ADDRS:
        p = host.run("ip", "-j", "-d", "route", "get", "fibmatch", a, check=False)
        want.append(normal(json.loads(p.stdout)) if p.returncode == 0 else None)
    assert got == want
    assert {w[2] for w in want if w} == {"unicast", "local"}  # the namespace really had them
    assert want[6:9] == [None, None, None]  # a lookup hitting a reject route fails, as in ip
    assert want[9] == ("10.5.0.0/16", "d9", "unicast", "100")  # found through the rule
    assert want[0] == ("default", "up0", "unicast", "main")


def test_many_lookups_in_chunks(host: Host) -> None:
    """More requests than one chunk (the socket buffer) holds, all answered, in order."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from fireroute.kernel.netlink import fib_match;"
        "r = fib_match([0xAC100000 + i for i in range(5000)] + [0xF0000001]);"
        "print(json.dumps([len(r), r[0], r[-1]]))"
    )
    out = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", code,
         str(REPO / "src")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    n, first, last = json.loads(out.stdout)
    assert n == 5001
    assert normal(first) == ("default", "up0", "unicast", "main")  # 172.16.0.0: default route
    assert normal(last) == ("default", "up0", "unicast", "main")
