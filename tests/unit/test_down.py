"""``down`` as one diff (manager.py ``_down_plan``), run on the fake kernel without root: the
leases of a real state file rendered as what the host has, the kernel read only where the
shape says a shared object may go (the table's listing, iptables-nft-save, the tagged links,
forwarding), the plan's operations applied to the fake as the executor would run them."""

from __future__ import annotations

import json

import pytest

from fireroute import manager
from fireroute.kernel import forwarding, observe, scope
from fireroute.kernel.fake import Fake
from fireroute.kernel.run import Result
from fireroute.plan.compiler import compile
from fireroute.plan.diff import ALL, diff
from fireroute.plan.steps import groups
from fireroute.want import render
from fireroute.want.nft import NftElement
from tests.unit.test_plan import _modes, golden, vm

TABLE = ("nft table", (None, "ip", "firecracker"))
SHARED_RULE = "--comment fireroute:shared"


class Host:
    """A runner answering the reads down makes from the fake: ``ip -j -batch`` link lines
    (by name, by master, by group), ``nft list table``, ``iptables-nft-save``."""

    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str], stdin: str | None = None) -> Result:
        self.argvs.append(argv)
        if argv[:2] == ["ip", "-j"]:
            return self._ip(stdin or "")
        if argv[:3] == ["nft", "list", "table"]:
            return self._table(argv[3], argv[4])
        if argv[:4] in (["nft", "-j", "list", "table"], ["nft", "-j", "list", "set"]):
            return self._json(*argv[4:])
        if argv == ["iptables-nft-save"]:
            return self._save()
        raise AssertionError(f"down read {argv}")

    def _links(self) -> list:
        return [o for o in self.fake.objs.values() if o.kind == "link" and o.ns is None]

    def _ip(self, stdin: str) -> Result:
        docs, err = [], []
        for n, line in enumerate(stdin.splitlines(), 1):
            words = line.split()
            field = {"dev": "name", "master": "master", "group": "group"}[words[2]]
            found = [
                {"ifname": o.name, "ifalias": o.alias}
                for o in self._links()
                if str(getattr(o, field)) == words[3]
            ]
            if field == "name" and not found:
                err.append(f"Command failed -:{n}")
            else:
                docs.append(json.dumps(found))
        return Result(1 if err else 0, "\n".join(docs) + "\n", "\n".join(err))

    def _table(self, family: str, name: str) -> Result:
        t = self.fake.objs.get(("nft table", (None, family, name)))
        if t is None:
            return Result(1, "", "Error: No such file or directory")
        lines = [f"table {family} {name} {{", f'\tcomment "{t.owner}"']
        sets: dict[str, list[str]] = {}
        for o in self.fake.objs.values():
            if o.kind == "nft element" and o.key[:3] == (None, family, name):
                sets.setdefault(o.set, []).append(f'{o.value} comment "{o.owner}"')
        for s, elems in sets.items():
            lines += [f"\tset {s} {{", "\t\telements = { " + ", ".join(elems) + " }", "\t}"]
        return Result(0, "\n".join([*lines, "}"]) + "\n", "")

    def _json(self, family: str, name: str, set_name: str | None = None) -> Result:
        """``nft -j list table`` (its sets' elements) or ``nft -j list set``, as nft prints
        the elements: a field a string, an address or a number; a map element a pair."""
        if ("nft table", (None, family, name)) not in self.fake.objs:
            return Result(1, "", "Error: No such file or directory")

        def val(text: str) -> object:
            f = [x.strip('"') if x.startswith('"') else int(x) if x.isdigit() else x
                 for x in text.split(" . ")]  # fmt: skip
            return f[0] if len(f) == 1 else {"concat": f}

        sets: dict[str, list] = {}
        for o in self.fake.objs.values():
            if o.kind == "nft element" and o.key[:3] == (None, family, name):
                key, colon, value = o.value.partition(" : ")
                e = {"elem": {"val": val(key), "comment": o.owner}}
                sets.setdefault(o.set, []).append([e, val(value)] if colon else e)
        items = [{"set": {"name": s, "elem": e}} for s, e in sets.items()
                 if set_name in (None, s)]  # fmt: skip
        if set_name is not None and not items:
            items = [{"set": {"name": set_name}}]
        return Result(0, json.dumps({"nftables": items}), "")

    def _save(self) -> Result:
        out = []
        for table in ("nat", "filter", "raw"):
            out.append(f"*{table}")
            out += [
                o.saved.replace("--comment ", '--comment "', 1).replace(" -j", '" -j', 1)
                if "--comment " in o.saved
                else o.saved
                for o in self.fake.objs.values()
                if o.kind == "iptables rule" and o.table == table
            ]
            out.append("COMMIT")
        return Result(0, "\n".join(out) + "\n", "")


class Applier:
    """The executor over the fake: each process's group of operations, forced (best effort)."""

    def __init__(self, fake: Fake) -> None:
        self.fake = fake

    def apply_best_effort(self, plan, count_faults: bool = True) -> None:
        for group in groups(plan.steps):
            ops = [op for s in group for op in getattr(s, "ops", ())]
            if ops:
                self.fake.apply(ops, force=True)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A state file, the fake host, and a manager reading and changing it."""
    fake = Fake()
    monkeypatch.setattr(observe, "require_net_admin", lambda action: None)
    monkeypatch.setattr(scope, "read_sysctl", lambda key: fake.forwarding)
    monkeypatch.setattr(forwarding, "recorded", lambda: None)  # (the state file's record)
    runner = Host(fake)
    m = manager.Manager(tmp_path / "state.db", runner=runner, executor=lambda: Applier(fake))
    return m, fake, runner


def up(m: manager.Manager, fake: Fake, *vms) -> str:
    """Record the VMs and make what they want on the fake, forwarding switched on from 0."""
    store = m._store()
    instance = store.instance()
    for v in vms:
        v.owner = instance
    store.reserve(list(vms), {manager.FORWARD_BEFORE: "0"})
    store.set_state([v.name for v in vms], "active")
    leases = store.all()
    table = {("ip", "firecracker")} if fake.objs.get(TABLE) is None else set()
    wanted = render.desired(leases, None, instance)
    have = {k: o for k, o in fake.read().items() if k in wanted}
    steps = compile(diff(have, wanted, ALL, instance), table, before=fake.forwarding)
    Applier(fake).apply_best_effort(manager.Plan(steps))
    assert all(k in fake.objs for k in wanted if k[0] != "forwarding")  # (the control)
    return instance


def of(fake: Fake, name: str) -> dict:
    """What the fake holds of one VM."""
    return {k: o for k, o in fake.objs.items() if o.vm == name}


def test_the_last_vm_takes_the_table_and_forwarding_back(host):
    m, fake, runner = host
    up(m, fake, vm("a", 0))
    assert of(fake, "a") and TABLE in fake.objs and fake.forwarding == "1"
    m.down(["a"])
    assert fake.objs == {}
    assert fake.forwarding == "0"
    assert m.ls() == []


def test_one_of_two_goes_and_the_other_stays_whole(host):
    m, fake, runner = host
    up(m, fake, vm("a", 0), vm("b", 1, allow_peers=True))
    b = of(fake, "b")
    shared = {k: o for k, o in fake.objs.items() if o.vm is None}
    m.down(["a"])
    assert of(fake, "a") == {}
    assert of(fake, "b") == b  # (the control: b's elements, in the same sets)
    assert {k: o for k, o in fake.objs.items() if o.vm is None} == shared
    assert fake.forwarding == "1"
    assert not any(a[:2] == ["nft", "list"] for a in runner.argvs)  # not the last: no read
    m.down(["b"])
    assert fake.objs == {} and fake.forwarding == "0"  # the last takes what was shared


def test_the_last_with_another_state_files_element_leaves_the_table(host):
    m, fake, runner = host
    up(m, fake, vm("a", 0))
    theirs = NftElement("ip", "firecracker", "taps", '"fr-x"', "0dd0dd0d:x", None)
    fake.seed(theirs)
    m.down(["a"])
    assert of(fake, "a") == {}
    assert TABLE in fake.objs and fake.get(theirs) is theirs  # their element, their table
    assert ("nft set", (None, "ip", "firecracker", "taps")) in fake.objs
    assert fake.forwarding == "0"  # (no link of theirs is here)


def test_a_table_of_ours_alone_goes_with_its_last_vm(host):
    """The control of the test above: the same table with only our elements goes."""
    m, fake, runner = host
    up(m, fake, vm("a", 0))
    m.down(["a"])
    assert TABLE not in fake.objs
    assert ["nft", "list", "table", "ip", "firecracker"] in runner.argvs


def test_iptables_the_shared_rule_goes_with_the_last(host):
    m, fake, runner = host
    up(m, fake, vm("a", 0, backend="iptables"), vm("b", 1, backend="iptables"))
    rules = [o for o in fake.objs.values() if o.kind == "iptables rule"]
    assert any(SHARED_RULE in r.saved for r in rules)
    b = of(fake, "b")
    m.down(["a"])
    left = [o for o in fake.objs.values() if o.kind == "iptables rule"]
    assert any(SHARED_RULE in r.saved for r in left)  # b still needs it
    assert of(fake, "a") == {} and of(fake, "b") == b
    m.down(["b"])
    assert not [o for o in fake.objs.values() if o.kind == "iptables rule"]
    assert fake.objs == {} and fake.forwarding == "0"


@pytest.mark.parametrize("tag", ["0dd0dd0d:x", "x"])  # another state file's, one before ids
def test_iptables_another_state_files_rule_keeps_the_shared_one(host, tag):
    from fireroute.want.iptables import IptRule

    m, fake, runner = host
    up(m, fake, vm("a", 0, backend="iptables"))
    spec = f"-o fr-x -m comment --comment fireroute:{tag} -j DROP"
    theirs = IptRule("filter", "FORWARD", spec, tag, "x")
    fake.seed(theirs)
    m.down(["a"])
    left = [o for o in fake.objs.values() if o.kind == "iptables rule"]
    assert theirs in left and any(SHARED_RULE in r.saved for r in left)
    assert of(fake, "a") == {}


def test_a_bridge_we_made_goes_with_its_last_vm_unless_another_link_is_on_it(host):
    from fireroute.want.objects import Link

    m, fake, runner = host
    bridged = dict(mode="bridge", bridge="br9", bridge_address="10.9.0.1/24")
    up(m, fake, vm("b", 1, guest="10.9.0.5/24", **bridged))
    bridge = ("link", (None, "br9"))
    assert bridge in fake.objs
    other = Link("veth-x", "veth", "", None, "", master="br9")
    fake.seed(other)
    m.down(["b"])
    assert bridge in fake.objs  # someone else's port is on it
    assert ("link", (None, "fr-b")) not in fake.objs and TABLE not in fake.objs
    del fake.objs[("link", (None, "veth-x"))]
    up(m, fake, vm("c", 2, guest="10.9.0.6/24", **bridged))
    m.down(["c"])
    assert bridge not in fake.objs  # (the control: nobody else on it)


# -- the decisions, against today's ------------------------------------------------------------


def _decided(tmp_path, name: str, vms: list, going: list[str], seed=()) -> str:
    """The plan (and what it makes obsolete) of taking ``going`` down from ``vms``, on the
    fake, printed."""
    from fireroute.plan.steps import as_commands
    from fireroute.want.netns import Netns

    fake = Fake()
    scope.read_sysctl = lambda key: fake.forwarding  # (restored by the caller's monkeypatch)
    m = manager.Manager(tmp_path / f"{len(going)}-{name}.db", runner=Host(fake))
    m._store().reserve([], {"instance": "5ca1ab1e"})
    fake.seed(Netns("/run/netns/pod", "", None))  # (the runtime's namespace)
    up(m, fake, *vms)
    fake.seed(*seed)
    store = m._store()
    plan = m._down_plan(store, [store.get(n) for n in going])
    return f"## {name}\n{as_commands(plan)}forget {plan.forget}\n"


def test_down_decisions_golden(tmp_path, monkeypatch):
    """What down plans, scenario by scenario, is what manager.py planned by hand before it
    was a diff (the golden was taken from that code on these same fake hosts; iptables lines
    are deleted as the reader spells them, without quotes around the comment)."""
    from fireroute.want.iptables import IptRule

    monkeypatch.setattr(scope, "read_sysctl", scope.read_sysctl)
    monkeypatch.setattr(forwarding, "recorded", lambda: None)
    theirs = NftElement("ip", "firecracker", "taps", '"fr-x"', "0dd0dd0d:x", None)
    spec = "-o fr-x -m comment --comment fireroute:0dd0dd0d:x -j DROP"
    rule = IptRule("filter", "FORWARD", spec, "0dd0dd0d:x", "x")
    ipt = dict(backend="iptables")

    def modes() -> list:
        vms = _modes()
        vms[5].options.tap = "tap1"  # (the golden's two attachments share a tap name)
        return vms

    scenarios = [
        ("last nft", [vm("a", 0)], ["a"], ()),
        ("one of two", [vm("a", 0), vm("b", 1, allow_peers=True)], ["a"], ()),
        ("two of three", [vm("a", 0), vm("b", 1), vm("c", 2)], ["a", "b"], ()),
        ("last with foreign element", [vm("a", 0)], ["a"], [theirs]),
        ("ipt last", [vm("a", 0, **ipt)], ["a"], ()),
        ("ipt one of two", [vm("a", 0, **ipt), vm("b", 1, **ipt)], ["a"], ()),
        ("ipt last with foreign rule", [vm("a", 0, **ipt)], ["a"], [rule]),
        ("fix policy", [vm("a", 0, fix_forward_policy=True), vm("b", 1)], ["a"], ()),
        ("every mode, all", modes(), ["n", "b", "d", "c", "p", "i"], ()),
        ("every mode, some", modes(), ["n", "b", "c", "p"], ()),
        ("every mode, bridge guests", modes(), ["b", "d"], ()),
    ]
    text = "".join(_decided(tmp_path, *s) for s in scenarios)
    golden("down-decisions.txt", text)
