"""The reader against the kernel: VMs of every mode (NAT on nft and on iptables, bridge, clone,
a CNI attachment) up in a throwaway host namespace, then ``read(ALL)``'s fireroute objects are
exactly what want/ renders for their leases, key and attributes. With
``FIREROUTE_UPDATE_GOLDEN=1`` the read is recorded for tests/unit/test_read.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cni.runtime import Runtime
from tests.conftest import REPO, Host
from tests.kernel.test_repair import MODE_ARGS
from tests.unit.test_read import FIXTURE

pytestmark = pytest.mark.privileged

READ = """
import json, sys
from pathlib import Path
from fireroute.kernel.read import Source, read
from fireroute.state.store import Store
from tests.unit.test_read import Recording, compare, fireroute_objects, render, vm_row

store = Store(sys.argv[1], create=False)
vms, instance = store.all(), store.instance()
src = Recording() if len(sys.argv) > 2 else Source()
cur = read(src, vms)
want = render(vms, instance)
if len(sys.argv) > 2:
    mine = f"fireroute-{instance}-"  # (other namespaces on the machine are no business here)
    dirs = src.log["dirs"]
    src.log["dirs"] = [[a, [n for n in names if n.startswith(mine)]] for a, names in dirs]
    doc = {"instance": instance, "rows": [vm_row(v) for v in vms], "log": src.log}
    Path(sys.argv[2]).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\\n")
print(json.dumps({
    "differences": compare(cur, want, instance),
    "compared": sorted({f"{o.kind}" for o in want}),
    "count": len(want),
    "read": len(fireroute_objects(cur, instance)),
    "forwarding": cur.forwarding,
}))
"""


def read_in(
    host: Host, record: Path | None = None, script: str = READ, args: tuple[str, ...] = ()
) -> dict:
    """The reader run in the host namespace (as fireroute runs: network namespace only): the
    ``script`` given the state file, ``args``, and where to record (if asked)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    argv = [sys.executable, "-c", script, str(host.state), *args]
    argv += [str(record)] if record else []
    p = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{host.ns}", *argv],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_read_all_equals_render_in_every_mode(host: Host):
    host.fireroute("up", "a", "--publish", "127.0.0.1:2222:22", "--allow-host-port", "53/udp")
    host.fireroute("up", "i", "--backend", "iptables")
    host.fireroute("up", "b", *MODE_ARGS["bridge"])
    host.fireroute("up", "c", *MODE_ARGS["clone"])
    rt = Runtime(host)
    try:
        rt.add("c1abc", rt.netns("c1"))
        record = FIXTURE if os.environ.get("FIREROUTE_UPDATE_GOLDEN") else None
        if record:
            record.parent.mkdir(parents=True, exist_ok=True)
        got = read_in(host, record)
        assert got["differences"] == [], got
        assert got["read"] == got["count"] > 60 and got["forwarding"] == "1"
        kinds = {"link", "addr", "sysctl", "netns", "route", "tc redirect", "nft table"}
        kinds |= {"nft chain", "nft element", "iptables rule"}
        assert set(got["compared"]) == kinds
        # the control: one object damaged behind fireroute's back is one difference
        host.run("ip", "link", "set", "fr-a", "down")
        host.run("ip", "route", "del", "172.31.9.9/32")
        damaged = read_in(host)["differences"]
        assert len(damaged) == 2, damaged
        assert any("differs Link" in d and "fr-a" in d for d in damaged), damaged
        assert any("missing Route" in d and "172.31.9.9/32" in d for d in damaged), damaged
    finally:
        rt.call("DEL", container="c1abc", netns=f"/var/run/netns/{host.ns}-c1")
        rt.close()
        host.fireroute("teardown", check=False)


def test_restore_refuses_a_foreign_table_in_our_tables_place(host: Host):
    """The table-owner check of restore is a question to the read: our table deleted and
    another program's made under its name is refused (and kept); the control: deleted
    alone, restore makes it again."""
    host.fireroute("up", "a")
    host.run("nft", "delete", "table", "ip", "firecracker")
    host.fireroute("restore")
    assert host.fireroute("check").returncode == 0  # the control
    host.run("nft", "delete", "table", "ip", "firecracker")
    host.run("nft", "add", "table", "ip", "firecracker")  # someone else's: no comment
    p = host.fireroute("restore", check=False)
    assert p.returncode != 0 and 'table "ip firecracker" exists and was not created' in p.stderr
    assert "Traceback" not in p.stderr
    assert "comment" not in host.run("nft", "list", "table", "ip", "firecracker").stdout
