"""The reader against the kernel for a NAT VM with IPv6 (issue 24 step 6), in a throwaway host
namespace: VM "a" with IPv6 beside VM "b" without. Up makes the IPv4 side of both; the IPv6
side of "a" (its tap's sysctls, ``fe80::1/64``, the route to its /64, the ip6 table, its
elements, IPv6 forwarding) is made here from the diff of the read against want/'s render,
each operation by its object's own text: then the read equals the render (the diff is empty).
With ``FIREROUTE_UPDATE_GOLDEN=1`` that read is recorded (tests/unit/data/read/host6.json)
for tests/unit/test_read6.py."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO, Host
from tests.kernel.test_read import read_in

pytestmark = pytest.mark.privileged

FIXTURE6 = REPO / "tests" / "unit" / "data" / "read" / "host6.json"
POOL6 = "fd3c:9a1e:52b0::/48"
ORDINAL = 1

READ6 = """
import json, subprocess, sys
from ipaddress import IPv6Network
from pathlib import Path
from fireroute.addressing import block6
from fireroute.kernel.read import Source
from fireroute.repair.picture import picture
from fireroute.state.store import Store
from fireroute.want.tables import declare
from tests.unit.test_read import Recording, vm_row

store = Store(sys.argv[1], create=False)
vms, instance = store.all(), store.instance()
a = next(v for v in vms if v.name == "a")
a.net6 = block6(IPv6Network(sys.argv[2]), int(sys.argv[3]))


def run(*argv, stdin=None):
    subprocess.run(argv, input=stdin, text=True, check=True)


def apply(ops):
    # each operation of the diff by its object's own text (the v6 compiler is plan step 5's)
    sets, chains, elements = [], [], []
    for op in ops:
        o = op.obj
        if o.kind in ("sysctl", "forwarding"):
            run("sysctl", "-q", "-w", o.text("set"))
        elif o.kind in ("addr", "route"):
            run("ip", *o.text("create").split())
        elif o.kind == "nft table":
            table = o
        elif o.kind == "nft set":
            sets.append((o.name, o.type, o.is_map))
        elif o.kind == "nft chain":
            chains.append(o)
        elif o.kind == "nft element":
            elements.append(o.text("add"))
        else:
            raise AssertionError(f"not a v6 object: {op.verb} {o!r}")
    run("nft", "-f", "-", stdin=declare(table.family, table.name, sets, chains) + "".join(elements))


made = picture(Source(), vms, instance).diff()
apply(made)
src = Recording() if len(sys.argv) > 4 else Source()
pic = picture(src, vms, instance)
if len(sys.argv) > 4:
    mine = f"fireroute-{instance}-"
    dirs = src.log["dirs"]
    src.log["dirs"] = [[x, [n for n in names if n.startswith(mine)]] for x, names in dirs]
    doc = {"instance": instance, "rows": [vm_row(v) for v in vms], "log": src.log,
           "net6": {a.name: str(a.net6)}}
    Path(sys.argv[4]).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\\n")
print(json.dumps({
    "made": sorted({f"{op.verb} {op.obj.kind}" for op in made}),
    "differences": [f"{op.verb} {op.obj!r}" for op in pic.diff()],
    "forwarding6": pic.cur.forwarding6,
    "v6": sorted(f"{o.kind} {o.key}" for o in pic.cur.objs.values()
                 if o.vm == "a" and ":" in str(o.key)),
}))
"""


def test_a_v6_vm_made_from_the_diff_reads_back_as_rendered(host: Host):
    host.fireroute("up", "a")
    host.fireroute("up", "b")
    try:
        record = FIXTURE6 if os.environ.get("FIREROUTE_UPDATE_GOLDEN") else None
        got = read_in(host, record, READ6, (POOL6, str(ORDINAL)))
        # what a v4 up leaves for a v6 VM to want: its tap's IPv6 side, the ip6 table with its
        # sets, chains and elements, IPv6 forwarding
        assert got["made"] == [
            "create addr", "create nft chain", "create nft element", "create nft set",
            "create nft table", "create route", "create sysctl", "set forwarding", "set sysctl",
        ], got  # fmt: skip
        assert got["differences"] == [], got
        assert got["forwarding6"] == "1"
        v6 = got["v6"]
        assert "addr (None, 'fr-a', 'fe80::1/64')" in v6
        assert "route (None, 'fd3c:9a1e:52b0:1::/64')" in v6
        # the control: b's tap has IPv6 off, nothing of IPv6 is read of it
        assert host.run("cat", "/proc/sys/net/ipv6/conf/fr-b/disable_ipv6").stdout.strip() == "1"
        assert not [k for k in v6 if "fr-b" in k]
    finally:
        host.fireroute("teardown", check=False)
        host.run("nft", "delete", "table", "ip6", "firecracker", check=False)
