"""Ready VMs (fireroute/ready.py) over the fake host (tests/unit/fake_cli.py): made under
names no client can give, claimed by renaming (every owner tag follows, all or nothing),
seen by check, gc and restore as the VMs they are, taken down together; and the daemon's
side of it: its config, and which ``up`` calls its worker lets claim."""

from __future__ import annotations

import json
import threading
import time
import types

import pytest

from fireroute import Host
from fireroute.errors import UsageError
from fireroute.model import check_vm_name, is_ready
from fireroute.serve.config import ServerConfig
from fireroute.serve.worker import Call, Worker
from tests.unit.fake_cli import FakeCli, FakeExecutor
from tests.unit.test_serve_order import FakeHost, Vm

SHAPE = {"pool": "172.16.0.0/16"}


def tags(cli: FakeCli) -> set[str]:
    """The VM names the fake's objects carry in the kernel: a link's alias, an element's or
    a rule's comment (an address or a sysctl carries none)."""
    out = set()
    for o in cli.fake.objs.values():
        if o.kind == "link" and o.alias:
            out.add(o.alias.rsplit(":", 1)[1])
        elif o.kind in ("nft element", "iptables rule") and o.vm is not None:
            out.add(o.vm)
    return out


def names(cli: FakeCli, state: str) -> list[str]:
    return [v["name"] for v in json.loads(cli.fireroute(state, "ls", "--json").stdout)]


def clean(cli: FakeCli, state: str) -> None:
    p = cli.fireroute(state, "check")
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_a_claim_renames_a_ready_vm_and_every_tag_follows(tmp_path, backend):
    shape = {**SHAPE, "backend": backend}
    with FakeCli() as cli:
        state = str(tmp_path / "state.db")
        h = Host(state)
        assert h.ready_fill(2, shape) == 1  # one at a time
        assert h.ready_fill(2, shape) == 2
        assert h.ready_fill(2, shape) == 2  # (no more than asked)
        assert names(cli, state) == ["_ready-0", "_ready-1"]
        clean(cli, state)
        vm = h.ready_claim("web-1", shape)
        assert vm is not None and vm.name == "web-1" and vm.tap == "fr-_ready-0"
        assert vm.as_dict() == h.get("web-1").as_dict()  # the record, as show answers it
        assert tags(cli) == {"web-1", "_ready-1"}  # nothing tagged for the ready VM's name
        clean(cli, state)
        assert h.gc() == "" and h.restore(dry_run=True) == ""  # ordinary leases
        assert h.ready_fill(2, shape) == 2  # its number is not used again: its tap lives
        assert sorted(names(cli, state)) == ["_ready-1", "_ready-2", "web-1"]
        assert h.ready_claim("web-1", shape) is None  # up already: up answers it
        assert h.down("web-1") == ["web-1"]
        clean(cli, state)


def test_a_request_of_other_options_claims_nothing(tmp_path):
    with FakeCli() as cli:
        state = str(tmp_path / "state.db")
        h = Host(state)
        assert h.ready_claim("web-1", SHAPE) is None  # no state file yet
        h.ready_fill(1, SHAPE)
        before = dict(cli.fake.objs)
        assert h.ready_claim("web-1", {**SHAPE, "dns": ["192.0.2.53"]}) is None
        assert h.ready_claim("web-1", {**SHAPE, "backend": "iptables"}) is None
        assert cli.fake.objs == before and names(cli, state) == ["_ready-0"]
        assert h.ready_claim("web-1", SHAPE) is not None  # the control


@pytest.mark.parametrize(
    ("backend", "at"), [("nft", 1), ("nft", 2), ("nft", 3), ("iptables", 1), ("iptables", 2)]
)
def test_a_failed_claim_leaves_the_ready_vm_as_it_was(tmp_path, at, backend):
    """A claim is three groups with nft (the old elements' removal, the link's alias, the new
    ones), two with iptables (the link's alias; the new rules, then the old ones' removal, in
    one iptables-nft-restore): a fault after any leaves the ready VM as it was."""
    shape = {**SHAPE, "backend": backend}
    with FakeCli() as cli:
        state = str(tmp_path / "state.db")
        h = Host(state)
        h.ready_fill(1, shape)
        before = {k: (o.owner, o.vm) for k, o in cli.fake.objs.items()}
        cli.fault = f"fail@{at}"
        with pytest.raises(Exception):  # noqa: B017, PT011 - the injected fault
            h.ready_claim("web-1", shape)
        cli.fault = ""
        assert {k: (o.owner, o.vm) for k, o in cli.fake.objs.items()} == before
        assert names(cli, state) == ["_ready-0"]
        clean(cli, state)
        assert h.ready_claim("web-1", shape) is not None  # the control: unfaulted
        clean(cli, state)


def test_an_iptables_claim_never_leaves_the_vm_without_its_rules(tmp_path, monkeypatch):
    """After each process of a claim, each of the ready VM's iptables rules is there under
    the old name or the new (the new ones go in before the old go: the kernel, and the fake,
    take two rules that differ in their comment only), and the claim ends with the new ones
    only, in the order they had."""
    shape = {**SHAPE, "backend": "iptables"}
    seen: list[list[tuple[str, str]]] = []
    point = FakeExecutor._fault_point

    def after(self: FakeExecutor) -> None:
        seen.append([(o.chain, o.saved) for o in rules(self.cli)])
        point(self)

    def rules(cli: FakeCli) -> list:
        return [o for o in cli.fake.objs.values() if o.kind == "iptables rule" and o.vm]

    with FakeCli() as cli:
        state = str(tmp_path / "state.db")
        h = Host(state)
        h.ready_fill(1, shape)
        before = [(o.chain, o.saved) for o in rules(cli)]
        monkeypatch.setattr(FakeExecutor, "_fault_point", after)
        assert h.ready_claim("web-1", shape) is not None
        monkeypatch.undo()
        renamed = [(c, s.replace(":_ready-0 ", ":web-1 ")) for c, s in before]
        assert len(before) == 11 and renamed != before
        assert seen and seen[-1] == renamed
        for now in seen:
            assert all(
                rule in now or twin in now for rule, twin in zip(before, renamed, strict=True)
            ), now
        clean(cli, state)


def test_drain_takes_every_ready_vm_down_and_nothing_else(tmp_path):
    with FakeCli() as cli:
        state = str(tmp_path / "state.db")
        h = Host(state)
        h.up("web-1", **SHAPE)
        for _ in range(3):
            h.ready_fill(3, SHAPE)
        assert sorted(h.ready_drain()) == ["_ready-0", "_ready-1", "_ready-2"]
        assert names(cli, state) == ["web-1"] and tags(cli) == {"web-1"}
        clean(cli, state)
        assert h.ready_drain() == []


def test_a_ready_vms_name_is_refused_to_everyone_else(tmp_path):
    assert is_ready("_ready-0") and is_ready("_ready-12")
    assert not is_ready("_ready-") and not is_ready("_ready-x") and not is_ready("ready-0")
    with pytest.raises(UsageError):
        check_vm_name("_ready-0")
    assert check_vm_name("_ready-0", ready=True) == "_ready-0"
    with pytest.raises(UsageError):
        check_vm_name("_ready-x", ready=True)
    with FakeCli() as cli:
        state = str(tmp_path / "state.db")
        p = cli.fireroute(state, "up", "_ready-0", "--pool", "172.16.0.0/16")
        assert p.returncode == 2 and "invalid vm name" in p.stderr, p.stderr
        assert cli.fireroute(state, "up", "ready-0", "--pool", "172.16.0.0/16").returncode == 0


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ({"ready": -1}, "ready must be 0..1024"),
        ({"ready": True}, "ready must be 0..1024"),
        ({"ready": "2"}, "ready must be 0..1024"),
        ({"ready": 2, "fixed": {"mode": "bridge", "dhcp": True}}, "fixed mode is not nat"),
        ({"ready": 2, "fixed": {"tap": "t0"}}, 'fixed "tap" names one VM'),
        ({"ready": 2, "fixed": {"publish": ["8080:80"]}}, 'fixed "publish" names one VM'),
    ],
)
def test_the_ready_key_is_checked(config, why):
    with pytest.raises(UsageError, match=why):
        ServerConfig(**config)
    assert ServerConfig(ready=2, fixed={"mode": "nat"}).ready == 2  # the control


class ReadyHost(FakeHost):
    def __init__(self) -> None:
        super().__init__()
        self.left = 1

    def ready_claim(self, name: str, options: dict) -> Vm | None:
        self.calls.append(("claim", name))
        if not self.left:
            return None
        self.left -= 1
        self.vms[name] = dict(options)
        return Vm(name, self.vms[name])


def test_the_worker_claims_for_the_shape_alone():
    """An up with the server's fixed options (the client gave none) asks for a claim; any
    other goes the cold way at once; with none left, the shape's goes cold too."""
    w = Worker("unused", 2, SHAPE)
    w.host = host = ReadyHost()  # type: ignore[assignment]
    w.have = 2
    batch = [Call("up", "a", dict(SHAPE)), Call("up", "b", {**SHAPE, "dns": ["192.0.2.53"]})]
    w._serve(batch)  # noqa: SLF001
    assert [c.result for c in batch] == [Vm("a", SHAPE), Vm("b", batch[1].options)]
    assert host.calls == [("claim", "a"), ("up_many", "b")]
    c = Call("up", "c", dict(SHAPE))
    w._serve([c])  # noqa: SLF001
    assert c.result == Vm("c", SHAPE) and host.calls[-2:] == [("claim", "c"), ("up_many", "c")]
    assert w.have == 0  # none was there: counted again before the next fill
    cold = Worker("unused")  # keeps none: never asks
    cold.host = host
    cold._serve([Call("up", "d", dict(SHAPE))])  # noqa: SLF001
    assert host.calls[-1] == ("up_many", "d")


class BrokenHost(ReadyHost):
    """A ready VM that drifted: every claim of it fails (and is undone)."""

    def ready_claim(self, name: str, options: dict) -> Vm | None:
        self.calls.append(("claim", name))
        raise RuntimeError("cannot remove iptables rule: missing")

    def ready_drain(self) -> list[str]:
        self.calls.append(("drain", ""))
        return ["_ready-0"]


def test_a_failed_claim_takes_the_ready_vms_down_to_be_made_again():
    """A claim that fails goes cold, and the ready VMs are taken down and counted as none
    (made again when idle); else a drifted first one would fail every claim while the count
    stays full. The control: a claim that works leaves the rest as they are."""
    w = Worker("unused", 2, SHAPE)
    w.host = host = BrokenHost()  # type: ignore[assignment]
    w.have, w.stalled = 2, True
    c = Call("up", "a", dict(SHAPE))
    w._serve([c])  # noqa: SLF001
    assert c.result == Vm("a", SHAPE)  # answered by the cold path
    assert host.calls == [("claim", "a"), ("drain", ""), ("up_many", "a")]
    assert (w.have, w.stalled) == (0, False)
    ok = Worker("unused", 2, SHAPE)
    ok.host = good = ReadyHost()  # type: ignore[assignment]
    ok.have = 2
    ok._serve([Call("up", "b", dict(SHAPE))])  # noqa: SLF001
    assert good.calls == [("claim", "b")] and ok.have == 1


def test_a_stop_waits_for_the_whole_drain(monkeypatch):
    """``Worker.stop`` returns only once every ready VM is down, however long the drain
    takes (a large pool's batch ``down``): here on a clock a hundred times fast, so that a
    stop bounded at 10 s (0.1 s here) returns while a drain of 0.4 s (40 s) still runs."""
    from fireroute.serve import worker

    drained: list[str] = []

    class DrainHost(FakeHost):
        def __init__(self, state: str, **_: object) -> None:
            super().__init__()

        def gc(self) -> str:
            return ""

        def ready_drain(self) -> list[str]:
            drained.append("started")
            if len(drained) == 1:  # (the start's drain: none left)
                return []
            time.sleep(0.4)
            drained.append("done")
            return ["_ready-0"]

    class Fast(threading.Thread):
        def join(self, timeout: float | None = None) -> None:
            super().join(None if timeout is None else timeout / 100)

    monkeypatch.setattr(worker, "Host", DrainHost)
    monkeypatch.setattr(worker, "early_deletions", lambda host: types.SimpleNamespace(drain=list))
    w = Worker("unused")
    w.thread = Fast(target=w._run, daemon=True)  # noqa: SLF001
    assert w.start() == ("", [])
    w.stop()
    assert drained == ["started", "started", "done"] and not w.thread.is_alive()
