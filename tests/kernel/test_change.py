"""``policy`` and ``publish`` as one diff (change.py) against the kernel: a step failing after
the nft transaction is undone there too, the elements left as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fireroute.want.nft import shard
from tests.conftest import Host

SRC = str(Path(__file__).resolve().parents[2] / "src")
FAIL_AFTER = """
import sys
from fireroute import change, request
from fireroute.errors import KernelError
from fireroute.kernel.apply import Executor
from fireroute.manager import Manager
from fireroute.plan.steps import SYSCTL, Plan, Step

old = Manager(sys.argv[1]).show("a")
fields = request.fields_of(old.options)
fields["allow_out"] = ["10.0.0.0/8"]
steps = change.plan_change(old, change.changed(old, request.options(fields)), change.POLICY)
assert steps and steps[0].tool == "nft", steps
bad = Step(SYSCTL, "net/ipv4/conf/nosuchdev/route_localnet=1", "write a sysctl", "a")
try:
    Executor().apply_all(Plan(steps + [bad]))
except KernelError as exc:
    print("failed:", exc)
"""


def allowed(host: Host) -> list[str]:
    name = f"out_allow_{shard('fr-a')}"
    return sorted(json.dumps(e) for e in host.set_elements("firecracker", name))


def test_a_change_undone_after_its_transaction_leaves_the_elements(host: Host):
    host.fireroute("up", "a", "--egress", "none", "--allow-out", "10.99.0.0/24")
    before = allowed(host)
    assert len(before) == 1 and "10.99.0.0" in before[0]
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = ["nsenter", f"--net=/var/run/netns/{host.ns}", sys.executable, "-c", FAIL_AFTER]
    p = subprocess.run([*argv, str(host.state)], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "failed:" in p.stdout and "nosuchdev" in p.stdout, p
    assert allowed(host) == before  # 10.0.0.0/8 came and went, 10.99.0.0/24 came back
    assert json.loads(host.fireroute("check", "--json").stdout)["ok"]
    host.fireroute("policy", "a", "--egress", "none", "--allow-out", "10.0.0.0/8")  # control
    after = allowed(host)
    assert len(after) == 1 and "10.0.0.0" in after[0] and after != before
