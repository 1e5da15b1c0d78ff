"""What ``up`` plans, scenario by scenario, on the fake kernel without root: the net for up as
a diff (docs/core-migration.md step 15b), which must plan the same. Each scenario brings VMs
up one request after another on one fake host (an uplink ``eth0`` with a default route),
applying each plan's operations, and prints every plan with the leases it made."""

from __future__ import annotations

import json
from ipaddress import IPv4Network

import pytest

from fireroute import manager
from fireroute.kernel import forwarding, observe, scope
from fireroute.kernel.fake import Fake
from fireroute.kernel.run import Result
from fireroute.model import Options, Published
from fireroute.plan.steps import as_commands, groups
from fireroute.want.objects import Link
from tests.unit.test_down import Host
from tests.unit.test_plan import golden


class UpHost(Host):
    """down's reads, and up's: the FIB lookups (the fake's), table owners, the tables of
    ours, the chains iptables-nft made (none), the FORWARD policy (accept). ``as_recorded``:
    iptables-nft-save shows no rule, as when the golden file was recorded (the old planners'
    iptables steps carried no operations, so the fake never held their rules)."""

    as_recorded = False

    def __call__(self, argv: list[str], stdin: str | None = None) -> Result:
        if self.as_recorded and argv == ["iptables-nft-save"]:
            return Result(0, "*nat\nCOMMIT\n*filter\nCOMMIT\n", "")
        lines = (stdin or "").splitlines()
        if argv[:2] == ["ip", "-j"] and any(line.startswith("route ") for line in lines):
            return self.fake.ip_json(argv, stdin)
        if argv[:4] == ["nft", "-t", "list", "table"]:
            return self._table(argv[4], argv[5])
        if argv[:4] == ["nft", "-t", "list", "ruleset"]:
            family = argv[4]
            out = "".join(
                f'table {family} {o.name} {{\n\tcomment "fireroute"\n}}\n'
                for o in self.fake.objs.values()
                if o.kind == "nft table" and o.family == family and o.ns is None
            )
            return Result(0, out, "")
        if argv == ["nft", "-j", "list", "chains", "ip"]:
            return Result(0, '{"nftables": []}', "")
        if argv == ["iptables-nft-save", "-t", "filter"]:
            return Result(0, "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n", "")
        return super().__call__(argv, stdin)


class Apply:
    """The executor over the fake: all or nothing (each group must apply whole)."""

    def __init__(self, fake: Fake) -> None:
        self.fake = fake

    def apply_all(self, plan) -> None:
        for group in groups(plan.steps):
            ops = [op for s in group for op in getattr(s, "ops", ())]
            if ops:
                out = self.fake.apply(ops)
                assert set(out) == {"ok"}, (out, [s.text for s in group])


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A manager over a fresh state file (of a known id) and a fake host with an uplink.
    ``as_recorded``: up reads forwarding off and no iptables rule whatever it made, as when
    the golden file was recorded (the old planners' forwarding and iptables steps carried no
    operations: the fake never held what they did)."""

    def make(name: str, as_recorded: bool = True) -> manager.Manager:
        fake = Fake()
        fake.seed(Link("eth0", "", "", None, "", group=None))
        fake.seed_route("0.0.0.0/0", "eth0")
        fwd = (lambda key: "0") if as_recorded else (lambda key: fake.forwarding)
        monkeypatch.setattr(scope, "read_sysctl", fwd)
        runner = UpHost(fake)
        runner.as_recorded = as_recorded
        m = manager.Manager(tmp_path / f"{name}.db", runner=runner)
        m.executor = lambda: Apply(fake)  # type: ignore[assignment,return-value]
        m._store().reserve([], {"instance": "5ca1ab1e"})
        return m

    monkeypatch.setattr(observe, "require_net_admin", lambda action: None)
    monkeypatch.setattr(scope, "which", lambda tool: f"/usr/sbin/{tool}")  # (conntrack)
    monkeypatch.setattr(forwarding, "recorded", lambda: None)
    monkeypatch.setattr(forwarding, "record", lambda value: False)
    monkeypatch.setattr(forwarding, "forget", lambda: None)
    return make


POLICY = dict(egress="none", allow_out=(IPv4Network("192.0.2.0/24"),))
BRIDGED = dict(mode="bridge", bridge="br9", dhcp=True)
SCENARIOS = [
    ("nft first, second", [(["a"], {}), (["b"], {})]),
    ("nft policy joins lean", [(["a"], {}), (["b"], POLICY)]),
    ("nft publish joins", [(["a"], {}), (["b"], dict(publish=(Published.parse("5353:53/udp"),)))]),
    ("nft batch", [(["a", "b", "c"], {})]),
    (
        "iptables first, second",
        [(["a"], dict(backend="iptables")), (["b"], dict(backend="iptables"))],
    ),
    (
        "fix policy",
        [(["a"], dict(fix_forward_policy=True)), (["b"], dict(fix_forward_policy=True))],
    ),
    ("bridge made", [(["a"], dict(bridge_address="10.9.0.1/24", **BRIDGED)), (["b"], BRIDGED)]),
    ("clone", [(["a"], dict(mode="clone"))]),
]


def test_up_decisions_golden(host):
    out = []
    for title, requests in SCENARIOS:
        m = host(title.replace(" ", "-").replace(",", ""))
        for names, options in requests:
            res = m.up(names, Options(**options))
            out.append(f"## {title} {','.join(names)}\n{as_commands(res.plan)}")
            out.append(
                f"vms {[(v.name, str(v.net), v.tap, v.mac) for v in res.vms]} {res.warnings}\n"
            )
    golden("up-decisions.txt", "".join(out))


def test_a_second_vm_reads_what_the_first_made(host):
    """Read as they are (the first VM's forwarding and shared conntrack rule applied to the
    fake), a second VM's plan neither switches forwarding on nor adds the shared rule again;
    the first VM's plan (the control) does both."""
    for backend in ("nft", "iptables"):
        m = host(f"read-{backend}", as_recorded=False)
        first = as_commands(m.up(["a"], Options(backend=backend)).plan)
        second = as_commands(m.up(["b"], Options(backend=backend)).plan)
        assert "net.ipv4.ip_forward=1" in first
        assert "net.ipv4.ip_forward=1" not in second
        shared = "--comment fireroute:shared"
        assert (shared in first, shared in second) == (backend == "iptables", False)
        assert "fr-b" in second


class Exclusive(Apply):
    """The executor over the fake, as the real one fails an exclusive ``create table`` of a
    table that exists: AlreadyExists, nothing applied."""

    def apply_all(self, plan) -> None:
        from fireroute.errors import AlreadyExists

        for step in plan.steps:
            if step.exclusive and any(a.obj.key in self.fake_tables() for a in step.ops):
                raise AlreadyExists("create table", "File exists")
        super().apply_all(plan)

    def fake_tables(self) -> set:
        return {o.key for o in self.fake.objs.values() if o.kind == "nft table"}


def test_a_table_left_over_is_read_and_added_to(host):
    """The first VM's table is made exclusively, unread; a table of ours left over makes that
    fail, and up reads it (ours) and diffs again: the table declared whole, no create."""
    from fireroute.want.tables import shared_table

    m = host("left-over", as_recorded=False)
    fake = m.runner.fake
    fake.seed(shared_table("ip", "firecracker"))
    m.executor = lambda: Exclusive(fake)
    reads, runner = [], m.runner
    m.runner = lambda argv, stdin=None: reads.append(argv) or runner(argv, stdin)
    plan = m.up(["a"], Options()).plan
    (table,) = [s for s in plan.steps if s.tool == "nft"]
    assert not table.exclusive and "create table" not in table.text
    assert "chain out_reject" in table.text  # whole: the parts another state file's VMs need
    assert ["nft", "-t", "list", "table", "ip", "firecracker"] in reads  # read, then
    assert ("nft element", (None, "ip", "firecracker", "taps", '"fr-a"')) in fake.objs
    fresh = host("no-left-over", as_recorded=False)  # control: none there, made exclusively
    fresh.executor = lambda: Exclusive(fresh.runner.fake)
    (made,) = [s for s in fresh.up(["a"], Options()).plan.steps if s.tool == "nft"]
    assert made.exclusive and made.text.startswith("create table ip firecracker")


def test_a_masquerading_guest_adds_its_bridges_egress_again():
    """As up always did: the second masquerading guest on a bridge adds the bridge's shared
    egress element again (idempotent), the first guest of another kind does not."""
    from fireroute.plan.compiler import compile
    from fireroute.plan.diff import Scope, diff
    from fireroute.want import render
    from fireroute.want.shared import Population
    from tests.unit.test_plan import vm

    def egress_lines(second) -> list[str]:
        a = vm("a", 0, mode="bridge", bridge="br9", guest="10.9.0.5/24", masquerade=True)
        current = render.desired([], Population.of([a]), "5ca1ab1e")
        scope.egress_again(current, [second])
        wanted = render.desired([second], Population.of([a, second]), "5ca1ab1e")
        steps = compile(diff(current, wanted, Scope(["b"]), "5ca1ab1e"))
        lines = [x for s in steps for x in s.text.splitlines()]
        return [x for x in lines if "element ip firecracker egress" in x]

    b = vm("b", 1, mode="bridge", bridge="br9", guest="10.9.0.6/24", masquerade=True)
    assert egress_lines(b) == [
        'add element ip firecracker egress { "br9" . "eth0" comment "5ca1ab1e:bridge:br9" }'
    ]
    assert egress_lines(vm("b", 1, mode="bridge", bridge="br9", guest="10.9.0.6/24")) == []


SAVED_HOST = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING ! -s 172.16.0.2/32 -i fr-a -m comment --comment "fireroute:5ca1ab1e:a" -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i fr-a -m comment --comment "fireroute:5ca1ab1e:a" -j DROP
-A FORWARD -o fr-a -m comment --comment "fireroute:5ca1ab1e:a" -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
"""
"""iptables-nft-save of a host with one iptables VM (no masquerade: nat/POSTROUTING empty)"""


@pytest.mark.parametrize(
    ("saved", "recorded", "asks_nft"),
    [
        ("", None, False),  # no table at all: everything is missing
        (SAVED_HOST, '["nat", "nat/POSTROUTING"]', False),  # the empty chain is fireroute's
        (SAVED_HOST, '["raw", "raw/PREROUTING"]', True),  # nat/POSTROUTING: there or not?
        (SAVED_HOST, None, True),
        (SAVED_HOST.replace(":POSTROUTING ACCEPT", ":POSTROUTING DROP"), None, False),
    ],
)
def test_up_reads_the_chains_off_iptables_save(saved: str, recorded: str | None, asks_nft: bool):
    """The tables and chains up's iptables rules would bring in are read off the
    iptables-nft-save it reads anyway: nft is asked only when a table or chain fireroute's
    rules use may be there or not (a built-in chain with policy ACCEPT and no rule: the save
    prints it either way) and the record does not already name it. Either way, the record
    comes out as nft's listing makes it (here: nat/POSTROUTING there, INPUT and FORWARD too)."""
    asked: list[list[str]] = []
    there = [("nat", "POSTROUTING"), ("filter", "INPUT"), ("filter", "FORWARD")]
    there += [("raw", "PREROUTING")]
    items = [{"chain": {"table": t, "name": c}} for t, c in there] if saved else []
    chains = json.dumps({"nftables": items})

    def runner(argv: list[str], stdin: str | None = None) -> Result:
        asked.append(argv)
        if argv == ["iptables-nft-save"]:
            return Result(0, saved, "")
        assert argv == ["nft", "-j", "list", "chains", "ip"], argv
        return Result(0, chains, "")

    made = scope.up_iptables({}, runner, recorded)
    assert (["nft", "-j", "list", "chains", "ip"] in asked) == asks_nft
    truth = scope.would_make(observe.nft_ip_chains(runner))
    assert scope.made_record(recorded, made) == scope.made_record(recorded, truth)


def test_the_last_vm_keeps_a_recorded_chain_whose_policy_drops():
    """Of the chains fireroute's first rules brought in, the one whose policy someone set to
    drop since stays with its table (nft's listing says so); the empty accepting ones go."""
    items = [("filter", "INPUT", "accept"), ("filter", "FORWARD", "drop"), ("nat", "X", None)]
    items += [("raw", "PREROUTING", "accept")]
    chains = [{"table": t, "name": n, **({"policy": p} if p else {})} for t, n, p in items]
    listing = json.dumps({"nftables": [{"chain": c} for c in chains]})
    now, held = observe.nft_ip_chains_held(lambda argv, stdin=None: Result(0, listing, ""))
    assert now == {"filter": {"INPUT", "FORWARD"}, "nat": {"X"}, "raw": {"PREROUTING"}}
    assert held == {("filter", "FORWARD")}
    made = ["filter", "filter/INPUT", "filter/FORWARD", "raw", "raw/PREROUTING"]
    kept = "delete chain ip filter INPUT\ndelete chain ip raw PREROUTING\ndelete table ip raw\n"
    assert scope.cleanup(made, [], now, (), held) == kept
    assert scope.cleanup(made, [], now).endswith("delete table ip filter\ndelete table ip raw\n")
