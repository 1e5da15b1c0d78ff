"""The reader against the kernel for a NAT VM with IPv6 (issue 24 step 6), in a throwaway host
namespace: VM "a" up with IPv6 (pool fd3c:9a1e:52b0::/48) beside VM "b" without; the read
equals what want/ renders for their leases (the diff is empty), and reads a's IPv6 side (its
tap's sysctls, its own gateway fe80::1:9a1e:52b0:0/64, the route to its /64, the ip6 table and
its elements, IPv6 forwarding) and nothing of IPv6 on b's tap. With
``FIREROUTE_UPDATE_GOLDEN=1`` the read is recorded (tests/unit/data/read/host6.json) for
tests/unit/test_read6.py."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO, Host
from tests.kernel.test_read import read_in

pytestmark = pytest.mark.privileged

FIXTURE6 = REPO / "tests" / "unit" / "data" / "read" / "host6.json"
POOL6 = "fd3c:9a1e:52b0::/48"
BLOCK = "fd3c:9a1e:52b0::/64"
"""a's /64: the pool's first"""

READ6 = """
import json, sys
from pathlib import Path
from fireroute.kernel.read import Source
from fireroute.repair.picture import picture
from fireroute.state.store import Store
from tests.unit.test_read import Recording, vm_row

store = Store(sys.argv[1], create=False)
vms, instance = store.all(), store.instance()
src = Recording() if len(sys.argv) > 2 else Source()
pic = picture(src, vms, instance)
if len(sys.argv) > 2:
    mine = f"fireroute-{instance}-"
    dirs = src.log["dirs"]
    src.log["dirs"] = [[x, [n for n in names if n.startswith(mine)]] for x, names in dirs]
    doc = {"instance": instance, "rows": [vm_row(v) for v in vms], "log": src.log,
           "net6": {v.name: str(v.net6) for v in vms if v.net6 is not None}}
    Path(sys.argv[2]).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\\n")
print(json.dumps({
    "differences": [f"{op.verb} {op.obj!r}" for op in pic.diff()],
    "forwarding6": pic.cur.forwarding6,
    "tables6": pic.cur.tables("ip6"),
    "v6": sorted(f"{o.kind} {o.key}" for o in pic.cur.objs.values() if ":" in str(o.key)),
}))
"""


def test_a_v6_vm_reads_back_as_rendered(host: Host):
    host.fireroute("up", "a", "--ipv6", "--pool6", POOL6)
    host.fireroute("up", "b")
    try:
        record = FIXTURE6 if os.environ.get("FIREROUTE_UPDATE_GOLDEN") else None
        got = read_in(host, record, READ6)
        assert got["differences"] == [], got
        assert got["forwarding6"] == "1"
        v6 = got["v6"]
        assert "addr (None, 'fr-a', 'fe80::1:9a1e:52b0:0/64')" in v6
        assert f"route (None, '{BLOCK}')" in v6
        assert got["tables6"] == ["firecracker"]
        assert any(k.startswith("nft element (None, 'ip6', 'firecracker', 'vms'") for k in v6)
        # the control: b's tap has IPv6 off, and nothing of IPv6 is read of it
        assert host.run("cat", "/proc/sys/net/ipv6/conf/fr-b/disable_ipv6").stdout.strip() == "1"
        assert not [k for k in v6 if "fr-b" in k]
    finally:
        host.fireroute("teardown", check=False)
