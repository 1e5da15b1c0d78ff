"""``teardown`` as one diff (manager.py ``_teardown_plan``), without root: the host recorded by
tests/kernel/test_read.py (one VM of each kind) is read back, diffed against nothing wanted,
and the plan's operations applied to the fake kernel holding what was read: nothing of the
state file's is left, and what is not its (another state file's element, a foreign rule) is."""

from __future__ import annotations

import pytest

from fireroute import manager, owner
from fireroute.kernel import forwarding, observe, scope
from fireroute.kernel.fake import Fake
from fireroute.plan.diff import ours
from fireroute.state.store import Store
from fireroute.want.iptables import IptRule
from fireroute.want.nft import NftElement
from tests.unit.test_down import Applier
from tests.unit.test_read import Replay, leases, load, read_recorded


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """The recorded host's leases in a state file of its id, the host in a fake kernel, and
    the manager; forwarding was 0 before fireroute switched it on."""
    doc = load()
    fake = Fake()
    fake.seed(*read_recorded(doc).objs.values())
    fake.forwarding = "1"
    monkeypatch.setattr(observe, "foreign_links", lambda instance, runner: [])
    monkeypatch.setattr(scope, "read_sysctl", lambda key: fake.forwarding)
    monkeypatch.setattr(forwarding, "recorded", lambda: None)
    path = tmp_path / "state.db"
    vms = leases(doc)
    Store(path).reserve(vms, {"instance": doc["instance"], manager.FORWARD_BEFORE: "0"})
    m = manager.Manager(path, executor=lambda: Applier(fake))
    return m, fake, doc


def plan_of(m: manager.Manager, doc: dict, src: Replay | None = None):
    store = m._store()
    assert store.instance() == doc["instance"]
    return m._teardown_plan(store, store.all(), src or Replay(doc["log"]))


def left(fake: Fake, instance: str) -> list:
    """What of the state file's the fake still holds."""
    return [o for o in fake.objs.values() if ours(o, instance) and o.kind != "forwarding"]


def test_teardown_takes_every_object_of_the_state_file(recorded):
    m, fake, doc = recorded
    instance = doc["instance"]
    assert len(left(fake, instance)) > 20  # (the control: the host has them)
    plan = plan_of(m, doc)
    Applier(fake).apply_best_effort(plan)
    assert left(fake, instance) == []
    assert not [o for o in fake.objs.values() if o.kind.startswith("nft ")]  # the tables went
    assert fake.forwarding == "0"
    steps = [(s.netns, s.text) for s in plan.steps]
    assert len(steps) == len(set(steps))  # nothing planned twice


def test_teardown_leaves_what_is_another_state_files(recorded):
    m, fake, doc = recorded
    nat = next(v for v in leases(doc) if v.mode == "nat" and v.backend == "nft")
    theirs = NftElement("ip", nat.table, "taps", '"fr-x"', "0dd0dd0d:x", "x")
    spec = "-o fr-x -m comment --comment fireroute:0dd0dd0d:x -j DROP"
    rule = IptRule("filter", "FORWARD", spec, "0dd0dd0d:x", "x")
    fake.seed(theirs, rule)
    src = Replay(doc["log"])
    src.runner = _with(src.runner, theirs, rule)
    Applier(fake).apply_best_effort(plan_of(m, doc, src))
    kept = [o for o in left(fake, doc["instance"]) if not o.kind.startswith("nft ")]
    (shared,) = kept  # their rule still needs the shared one (and their element the table)
    assert shared.owner == owner.SHARED
    assert fake.get(theirs) is theirs and fake.get(rule) is rule
    assert ("nft table", (None, "ip", nat.table)) in fake.objs  # their element is in it


def _with(runner, element: NftElement, rule: IptRule):
    """The recorded answers, with another state file's element in the NAT table's listing
    and its rule in iptables-nft-save's."""
    from fireroute.kernel.run import Result

    def answer(argv: list[str], stdin: str | None) -> Result:
        res = runner(argv, stdin)
        if argv[:3] == ["nft", "-j", "list"] and argv[-1] == element.table and "ip" in argv:
            import json

            doc = json.loads(res.out)
            for item in doc["nftables"]:
                s = item.get("set")
                if s and s["name"] == element.set:
                    s.setdefault("elem", []).append(
                        {"elem": {"val": element.value.strip('"'), "comment": element.owner}}
                    )
            return Result(res.rc, json.dumps(doc), res.err)
        if argv == ["iptables-nft-save"]:
            out = res.out.replace("*filter\n", "*filter\n", 1)
            lines = out.splitlines()
            at = max(i for i, line in enumerate(lines) if line.startswith("-A "))
            lines.insert(at + 1, rule.saved)
            return Result(res.rc, "\n".join(lines) + "\n", res.err)
        return res

    return answer
