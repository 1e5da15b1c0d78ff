"""The stateful property test (tests/reliability/machine.py: the same rules and invariants as
its kernel run, tests/reliability/test_property.py) on the fake kernel (kernel/fake.py),
without root: the real CLI in-process (tests/unit/fake_cli.py), many examples.

What differs from the kernel run, and why:

- no packets: the kernel run's probe swaps a NAT guest's tap for a veth and sends traffic
  (masqueraded out, refused to the host). The fake has no packets, so here a probe is the
  rest of it: the tap taken away behind fireroute's back, ``restore`` makes it again, and
  ``check`` is clean. Whether the rules let the right packets through is the kernel run's.
- the host is read from the fake's objects (fake_cli.py ``current``), not by parsing
  ``ip``/``nft``/``iptables-nft-save`` output: that parsing is tested on recordings
  (tests/unit/test_read.py) and the fake against the kernel (tests/kernel/test_fake_parity.py).
- an nft step is applied from its script, read back into operations (fake_text.py): the
  script is what the kernel runs (a take-down declares its elements before deleting them);
  an ``ip`` step from its operations; an iptables step from its operations or, where it
  has none (``up``'s before it was a diff), from its text. A script line the reader does not
  know fails the test, never passes over.
- ``kill@K`` runs the verb in a forked child that exits at the K-th group, as SIGKILL: no
  handler of the dying process runs.
- The foreign objects are compared as objects (the kernel run compares ``ip``/``nft``
  listings): another program's link, table with its chain and rule, and iptables rule.
- IPv6 (the ``nft6`` shape, ``up --ipv6``): IPv6 forwarding, its record, and the sysctls up
  and down read (a tap's ``disable_ipv6``) are the fake's (fake_cli.py ``sysctl``).

And beside the kernel run's rules, faults it does not inject: ``up`` failing at its K-th group
(``fail@K``) leaves the host and the state file exactly as they were (but for the parts an up
into a table that was there declares: they stay); ``down`` stopped at its
K-th group leaves a lease that ``gc`` finishes, and nothing of the VM stays. The failed
``up`` found two bugs of the undo (seen on the kernel too, tests/kernel/test_failed_up_undo.py),
fixed since; the two tests at the end keep them.

Runs 100 examples of up to 25 steps (about 45 s here); more with
``FIREROUTE_FAKE_PROPERTY_EXAMPLES`` (random seeds then; derandomized otherwise) and
``FIREROUTE_FAKE_PROPERTY_STEPS``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from tempfile import mkdtemp
from unittest.mock import ANY

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from fireroute.kernel.read import _vm_of
from fireroute.want import tables
from fireroute.want.iptables import IptRule
from fireroute.want.nft import NftElement
from fireroute.want.objects import Link
from fireroute.want.tables import NftChain, NftTable
from tests.reliability import machine
from tests.unit.fake_cli import FakeCli

EXAMPLES_VAR = "FIREROUTE_FAKE_PROPERTY_EXAMPLES"
EXAMPLES = int(os.environ.get(EXAMPLES_VAR, "100"))
STEPS = int(os.environ.get("FIREROUTE_FAKE_PROPERTY_STEPS", "25"))
pytestmark = pytest.mark.timeout(120 + EXAMPLES * STEPS // 10)
NAT = (None, "ip", "firecracker")
NAT6 = (None, "ip6", "firecracker")
PART_KINDS = ("nft set", "nft chain")
THEIRS = NftTable("ip", "theirs", "", "", None, None)
FOREIGN = [
    Link("fr-foreign", "veth", "", None, "", group=None, up=False, peer=(None, "other0")),
    THEIRS,
    NftChain(THEIRS, "c", "type filter hook forward priority 10; policy accept;", ("counter",)),
    IptRule("filter", "FORWARD", "-i docker0 -j ACCEPT", "", None),
]


def fields(obj: object) -> tuple:
    """Everything an object holds, for comparing two of them."""
    slots = [s for c in type(obj).__mro__ for s in getattr(c, "__slots__", ())]
    return (type(obj).__name__, *(getattr(obj, s, None) for s in slots))


class FakeMachine(machine.Machine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(mkdtemp(prefix="frpropfake-"))
        self.cli = FakeCli().__enter__()
        self.fake = self.cli.fake
        for obj in FOREIGN:  # another program's, made as it would make them
            self.fake.do("create", obj)
        self.foreign = self.foreign_state()

    def teardown(self) -> None:
        self.cli.__exit__(None, None, None)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the host: the fake ----------------------------------------------------------------
    def fireroute(self, sf: str, args: tuple[str, ...], fault: str):  # noqa: ANN201
        return self.cli.fireroute(str(self.root / sf / "state.db"), *args, fault=fault)

    def links(self) -> set[str]:
        return {o.name for o in self.fake.objs.values() if o.kind == "link" and o.ns is None}  # type: ignore[attr-defined]

    def foreign_state(self) -> tuple:
        names = ("fr-foreign", "other0", "up0")
        mine = {
            k: fields(o) for k, o in self.fake.objs.items() if o.kind == "link" and o.name in names
        }  # type: ignore[attr-defined]
        theirs = {k: fields(o) for k, o in self.fake.objs.items() if k[1][:3] == THEIRS.key}
        rules = [
            (fields(o), self.fake.copies.get(k, 0))
            for k, o in self.fake.objs.items()
            if o.kind == "iptables rule" and not o.owner
        ]
        return mine, theirs, rules

    def _delete(self, kind: str, key: tuple) -> None:
        obj = self.fake.objs.get((kind, key))
        assert obj is not None, (kind, key)
        self.fake.do("delete", obj)

    def drop_tap(self, dev: str) -> None:
        self._delete("link", (None, dev))

    def flush(self, what: str) -> None:
        """As nft does: the rules of the table's chains (or of its forward chain) go; sets and
        their elements stay."""
        table = self.fake.objs[("nft table", NAT)]
        for k, o in list(self.fake.objs.items()):
            name = k[1][3] if k[0] == "nft chain" and k[1][:3] == NAT else None
            if name is not None and (what == "flush-table" or name == "forward"):
                self.fake.objs[k] = NftChain(table, name, o.header, ())  # type: ignore[arg-type, attr-defined]

    def drop_masq(self, src: str, uplink: str) -> None:
        key = ("nft element", (*NAT, "masq", f'{src} . "{uplink}"'))
        if key in self.fake.objs:  # (else gone already)
            self._delete(*key)

    def add_element(self, set_name: str, value: str, tag: str) -> None:
        self.fake.do("create", NftElement("ip", "firecracker", set_name, value, tag, _vm_of(tag)))

    def table_exists(self) -> bool:
        return ("nft table", NAT) in self.fake.objs

    def set_held(self, set_name: str) -> bool:
        return ("nft set", (*NAT, set_name)) in self.fake.objs

    def chains_intact(self) -> bool:
        have = {
            o.name: (o.header, list(o.rules))  # type: ignore[attr-defined]
            for k, o in self.fake.objs.items()
            if o.kind == "nft chain" and k[1][:3] == NAT
        }
        return have == tables.chains(tables.parts_of(have))

    def table6_exists(self) -> bool:
        return ("nft table", NAT6) in self.fake.objs

    def forwarding6(self) -> str:
        return self.fake.forwarding6

    def ipv6_of(self, dev: str) -> tuple[set[str], set[str]]:
        objs = self.fake.objs.values()
        addrs = {o.cidr for o in objs if o.kind == "addr" and o.ns is None and o.dev == dev}  # type: ignore[attr-defined]
        routes = {o.dst for o in objs if o.kind == "route" and o.ns is None and o.dev == dev}  # type: ignore[attr-defined]
        return {a for a in addrs if ":" in a}, {r for r in routes if ":" in r}

    def probe(self, sf: str, name: str) -> None:
        """No packets (see the module's docstring): the tap taken away, ``restore`` makes it
        again, and ``check`` is clean."""
        vm = next(v for v in self.ls(sf) if v["name"] == name)
        self.drop_tap(vm["host_dev"])
        p = self.fr(sf, "restore")
        assert p.returncode == 0, p.stderr
        assert self.fr(sf, "check").returncode == 0
        assert vm["host_dev"] in self.links()

    # -- faults the kernel run does not inject ---------------------------------------------
    def snapshot(self) -> tuple:
        f = self.fake
        objs = {k: fields(o) for k, o in f.objs.items()}
        return objs, dict(f.copies), f.forwarding, f.forwarding6, dict(self.cli.records)

    @staticmethod
    def parts_aside(snap: tuple, tables: set[tuple]) -> tuple[tuple, dict]:
        """``snap`` without the sets and chains of ``tables`` (and those, beside): an up into
        a table that was there declares the parts it needs, and its undo leaves them (they
        are declarations another state file's VMs may share: want/tables.py)."""
        objs = snap[0]
        parts = {k: v for k, v in objs.items() if k[0] in PART_KINDS and k[1][:3] in tables}
        rest = {k: v for k, v in objs.items() if k not in parts}
        return (rest, *snap[1:]), parts

    @rule(
        sf=st.sampled_from(machine.FILES),
        n=st.sampled_from(machine.NAMES),
        shape=st.sampled_from(list(machine.SHAPES)),
        k=st.integers(1, 6),
    )
    def failed_up(self, sf: str, n: str, shape: str, k: int) -> None:
        """``up`` failing after its K-th group: all or nothing, so the host and every state
        file are as before (when it got to the end, it is up)."""
        name = sf.lower() + n
        if name in self.up[sf]:
            return
        before, listed = self.snapshot(), {f: self.ls(f) for f in machine.FILES}
        p = self.fr(sf, *self.args(sf, name, shape), env={"FIREROUTE_FAULT": f"fail@{k}"})
        if p.returncode == 0:  # fewer than K groups
            self.up[sf][name] = shape
            return
        assert p.returncode != 70 and "injected fault" in p.stderr, p.stderr
        tables = {k[1] for k in before[0] if k[0] == "nft table"}
        (after, parts), (was, had) = (
            self.parts_aside(x, tables) for x in (self.snapshot(), before)
        )
        assert after == was, p.stderr
        assert had.keys() <= parts.keys()  # (parts: declared again)
        flushed = any(d[0] in machine.SHARED_DAMAGE for f in machine.FILES for d in self.damaged[f])
        # (a chain flushed before, by drift, and the up failed before its nft group: flushed
        # still; found by the long run, with no IPv6 in it)
        assert flushed or not self.table_exists() or self.chains_intact()
        assert {f: self.ls(f) for f in machine.FILES} == listed

    @rule(sf=st.sampled_from(machine.FILES), n=st.sampled_from(machine.NAMES), k=st.integers(1, 3))
    def stopped_down_then_gc(self, sf: str, n: str, k: int) -> None:
        """``down`` stopped after its K-th group (as a crash would stop it): ``gc`` finishes
        it, and nothing tagged for the VM stays."""
        name = sf.lower() + n
        if name not in self.up[sf]:
            return
        p = self.fr(sf, "down", name, env={"FIREROUTE_FAULT": f"fail@{k}"})
        assert p.returncode != 70, p.stderr
        q = self.fr(sf, "gc")
        assert q.returncode == 0, q.stderr
        assert name not in {v["name"] for v in self.ls(sf)}
        left = [o for o in self.fake.objs.values() if o.vm == name and o.owner.endswith(f":{name}")]
        assert not [o for o in left if o.owner.split(":")[0] == self._instance(sf)], left
        self.up[sf].pop(name)
        self.damaged[sf] = {d for d in self.damaged[sf] if d[1] != name}
        if not self.up[sf]:
            self.damaged[sf] = set()

    def _instance(self, sf: str) -> str:
        from fireroute.state.store import Store

        return Store(self.root / sf / "state.db").instance()


FakeMachine.TestCase.settings = settings(  # one failure shrunk, not each kind found
    machine.run_settings(EXAMPLES, STEPS, seeded=not os.environ.get(EXAMPLES_VAR)),
    report_multiple_bugs=False,
)


class TestFakeStateMachine(FakeMachine.TestCase):  # type: ignore[misc,valid-type]
    pass


def test_a_killed_up_leaves_what_it_made_and_gc_takes_it(tmp_path):
    """The control of ``kill@K``: the child's death keeps what it made (the parent sees the
    half-made VM as the kernel would), and gc takes it away."""
    with FakeCli() as cli:
        state = str(tmp_path / "state.db")
        p = cli.fireroute(state, "up", "a1", "--pool", "172.16.0.0/16", fault="kill@2")
        assert p.returncode == 137
        assert ("link", (None, "fr-a1")) in cli.fake.objs  # made before the kill
        assert "pending" in cli.fireroute(state, "ls").stdout
        assert cli.fireroute(state, "gc").returncode == 0
        assert ("link", (None, "fr-a1")) not in cli.fake.objs
        assert cli.fireroute(state, "ls", "--json").stdout.strip() == "[]"


def test_a_failed_up_keeps_the_table_another_state_file_holds(tmp_path):
    """State file B's VM holds the NAT table; A's first VM finds it there (AlreadyExists),
    adds to it, and then fails (a later group; here fail@3): its undo takes back only what
    it added (its elements), never the table with B's VM's elements (the bug: it deleted
    the table, plan/compiler.py ``_table_up``; now ``_added``)."""
    with FakeCli() as cli:
        a, b = str(tmp_path / "A.db"), str(tmp_path / "B.db")
        assert cli.fireroute(b, "up", "b1", "--pool", "172.17.0.0/16").returncode == 0
        assert (
            cli.fireroute(a, "up", "a1", "--pool", "172.16.0.0/16", fault="fail@3").returncode == 1
        )
        assert cli.fireroute(a, "ls", "--json").stdout.strip() == "[]"  # (the control: undone)
        assert not [o for o in cli.fake.objs.values() if o.vm == "a1"]
        p = cli.fireroute(b, "check")
        assert p.returncode == 0, p.stdout


EGRESS = ("nft element", (*NAT, "egress", '"brb" . "up0"'))


def _bridged(cli: FakeCli, b: str, name: str, fault: str = "") -> int:
    args = ["--mode", "bridge", "--masquerade", *machine.BRIDGES["B"]]
    return cli.fireroute(b, "up", name, *args, fault=fault).returncode


def test_a_failed_bridge_up_takes_back_its_bridges_egress_element(tmp_path):
    """A state file's NAT VM holds the table; its first bridge guest (``--masquerade``) adds
    its own elements and its bridge's egress element, then fails (fail@1, after that nft
    group): the undo takes back both (the bug: the guest's only, and check then named the
    element an orphan)."""
    with FakeCli() as cli:
        b = str(tmp_path / "B.db")
        assert cli.fireroute(b, "up", "b2", "--pool", "172.17.0.0/16").returncode == 0
        p = cli.fireroute(b, "up", "b1", "--mode", "bridge", "--masquerade",
                          *machine.BRIDGES["B"], fault="fail@1")  # fmt: skip
        assert p.returncode == 1 and "injected fault" in p.stderr
        assert [v["name"] for v in json.loads(cli.fireroute(b, "ls", "--json").stdout)] == ["b2"]
        assert EGRESS not in cli.fake.objs
        p = cli.fireroute(b, "check")
        assert p.returncode == 0, p.stdout
        assert _bridged(cli, b, "b1") == 0 and EGRESS in cli.fake.objs  # (control: no fault)


def test_a_failed_bridge_up_leaves_the_egress_element_another_guest_added(tmp_path):
    """The other side: a guest on the bridge masquerades already, so the element is its
    too, and a second guest's failed up leaves it."""
    with FakeCli() as cli:
        b = str(tmp_path / "B.db")
        assert _bridged(cli, b, "b1") == 0 and EGRESS in cli.fake.objs
        assert _bridged(cli, b, "b2", "fail@1") == 1
        assert EGRESS in cli.fake.objs
        p = cli.fireroute(b, "check")
        assert p.returncode == 0, p.stdout


def _checks(cli: FakeCli, *states: str) -> list[tuple[int, str]]:
    return [(p.returncode, p.stdout) for p in (cli.fireroute(s, "check") for s in states)]


@pytest.mark.parametrize("b_ipv6", [False, True])
def test_an_ip6_table_declared_whole_is_fireroutes(tmp_path, b_ipv6):
    """Found by this machine: state file B's VM made the ip table (with IPv6: the ip6 one
    too); A's first VM with IPv6 finds a table there (AlreadyExists) and declares it whole
    (plan/compiler.py ``_table_up``; the ip6 one too, while it made it: before manager.py
    ``_up_retry`` made a missing one exclusively). Check called the ip6 table's parts its
    VMs did not need (the egress and publish sets and chains) not fireroute's, in A's check
    (and, with B's v6 VM, in B's): want/render.py ``held`` read the ip table's parts only;
    now the ip6 table's too. Control: A's VM alone (its tables made exclusively, lean) is
    clean as well."""
    with FakeCli() as cli:
        a, b = str(tmp_path / "A.db"), str(tmp_path / "B.db")
        up_b = ["up", "b1", "--pool", "172.17.0.0/16", *(["--ipv6"] if b_ipv6 else [])]
        assert cli.fireroute(b, *up_b).returncode == 0
        p = cli.fireroute(a, "up", "a1", "--pool", "172.16.0.0/16", "--ipv6")
        assert p.returncode == 0, p.stderr
        whole = ("nft set", (*NAT6, "out_jump")) in cli.fake.objs
        assert whole == b_ipv6  # (B's: declared whole; A's own: made exclusively, lean)
        assert _checks(cli, a, b) == [(0, ANY), (0, ANY)], _checks(cli, a, b)
        assert "nothing to do" in cli.fireroute(a, "restore").stdout
        assert cli.fireroute(b, "down", "b1").returncode == 0
        assert _checks(cli, a) == [(0, ANY)], _checks(cli, a)
    with FakeCli() as cli:  # the control
        a = str(tmp_path / "A2.db")
        assert cli.fireroute(a, "up", "a1", "--pool", "172.16.0.0/16", "--ipv6").returncode == 0
        assert ("nft set", (*NAT6, "out_jump")) not in cli.fake.objs
        assert _checks(cli, a) == [(0, ANY)], _checks(cli, a)


def test_a_failed_v6_up_beside_another_state_files_table_leaves_no_ip6_table(tmp_path):
    """Found by this machine: B's v4 VM holds the ip table; A's first VM with IPv6 finds it
    (AlreadyExists) and, on the retry, declared the ip6 table (which it made) whole: failing
    after that (fail@3), its undo took back its elements only, and the ip6 table stayed,
    every part, no VM in it. Now manager.py ``_up_retry`` makes a missing table exclusively:
    at each K the host is as before (but the ip table's parts declared again). Control: no
    fault, the ip6 table is there."""
    with FakeCli() as cli:
        a, b = str(tmp_path / "A.db"), str(tmp_path / "B.db")
        assert cli.fireroute(b, "up", "b1", "--pool", "172.17.0.0/16").returncode == 0
        up_a = ("up", "a1", "--pool", "172.16.0.0/16", "--ipv6")
        for k in range(1, 5):  # (4 groups: a fifth fault point is never reached)
            before = {k: fields(o) for k, o in cli.fake.objs.items() if k[1][1:2] != ("ip",)}
            p = cli.fireroute(a, *up_a, fault=f"fail@{k}")
            assert p.returncode == 1 and "injected fault" in p.stderr, (k, p.stderr)
            after = {k: fields(o) for k, o in cli.fake.objs.items() if k[1][1:2] != ("ip",)}
            assert after == before and cli.fake.forwarding6 == "0", k
            assert cli.fireroute(b, "check").returncode == 0, k
        assert cli.fireroute(a, *up_a, fault="fail@5").returncode == 0
        assert ("nft table", NAT6) in cli.fake.objs
