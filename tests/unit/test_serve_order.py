"""The daemon's worker runs a batch of waiting calls so that each answer, and what is left
at the end, is what the calls one after the other in arrival order would have given; and it
still runs independent calls together. A stand-in Host keeps VMs in a dict."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute.errors import ConflictError, NotFound
from fireroute.serve.worker import Call, Worker, steps


class Vm:
    def __init__(self, name: str, options: dict) -> None:
        self.name, self.options = name, options

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vm) and (self.name, self.options) == (other.name, other.options)


class FakeHost:
    """up (a no-op when up with equal options, a conflict with others), up_many (all or
    nothing), down (the names that were up), get, list: the semantics of fireroute.Host."""

    def __init__(self) -> None:
        self.vms: dict[str, dict] = {}
        self.calls: list[tuple[str, ...]] = []

    def up_many(self, names: list[str], **options: object) -> list[Vm]:
        self.calls.append(("up_many", *names))
        for n in names:
            if n in self.vms and self.vms[n] != options:
                raise ConflictError(f"{n} is up with other options")
        for n in names:
            self.vms[n] = dict(options)
        return [Vm(n, self.vms[n]) for n in names]

    def up(self, name: str, **options: object) -> Vm:
        return self.up_many([name], **options)[0]

    def down(self, *names: str) -> list[str]:
        self.calls.append(("down", *names))
        return [n for n in dict.fromkeys(names) if self.vms.pop(n, None) is not None]

    def get(self, name: str) -> Vm:
        if name not in self.vms:
            raise NotFound(name)
        return Vm(name, self.vms[name])

    def list(self) -> list[Vm]:
        return [Vm(n, o) for n, o in sorted(self.vms.items())]


def run(batch: list[Call], host: FakeHost) -> list[object]:
    w = Worker("unused")  # (its thread is never started: _serve is called here)
    w.host = host  # type: ignore[assignment]
    w._serve(batch)  # noqa: SLF001
    return [c.error.__class__.__name__ if c.error else c.result for c in batch]


def one_by_one(batch: list[Call], host: FakeHost) -> list[object]:
    return [run([c], host)[0] for c in batch]


def copy(c: Call) -> Call:
    return Call(c.verb, c.name, dict(c.options))


def test_delete_put_delete_of_one_vm_ends_deleted():
    """Issue 21 item 6: all DELETEs of a batch ran where the first stood; the VM was up after
    the last DELETE said removed."""
    host = FakeHost()
    host.vms["a"] = {}
    batch = [Call("down", "a"), Call("up", "a"), Call("down", "a")]
    got = run(batch, host)
    assert got == [True, Vm("a", {}), True]
    assert host.vms == {}  # the last call was a DELETE
    assert [len(s) for s in steps(batch)] == [1, 1, 1]


def test_independent_calls_still_run_together():
    host = FakeHost()
    host.vms.update({"a": {}, "b": {}, "c": {}})
    batch = [Call("down", "a"), Call("up", "x"), Call("down", "b"), Call("up", "y")]
    batch += [Call("down", "c"), Call("up", "z", {"dns": ["192.0.2.1"]})]
    got = run(batch, host)
    assert got[0] is True and got[2] is True and got[4] is True
    assert host.calls == [("down", "a", "b", "c"), ("up_many", "x", "y"), ("up_many", "z")]
    assert [c.batch for c in batch] == [3, 2, 3, 2, 3, 1]


def test_a_repeated_delete_is_answered_as_it_would_be_alone():
    host = FakeHost()
    host.vms["a"] = {}
    batch = [Call("down", "a"), Call("down", "b"), Call("down", "a")]
    assert run(batch, host) == [True, False, False]  # one down of a, as alone
    assert host.calls == [("down", "a", "b")]


def test_nothing_moves_across_a_call_on_every_vm():
    host = FakeHost()
    host.vms["a"] = {}
    batch = [Call("down", "a"), Call("list"), Call("down", "b"), Call("up", "a")]
    got = run(batch, host)
    assert got[1] == []  # the list saw a gone, and not yet up again
    assert [len(s) for s in steps(batch)] == [1, 1, 1, 1]


names = st.sampled_from(["a", "b", "c"])
options = st.sampled_from([{}, {"dns": ["192.0.2.1"]}])
calls = st.one_of(
    st.builds(lambda n: Call("down", n), names),
    st.builds(lambda n, o: Call("up", n, o), names, options),
    st.builds(lambda n: Call("get", n), names),
    st.just(None).map(lambda _: Call("list")),
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(names, options), st.lists(calls, max_size=12))
def test_a_batch_answers_as_its_calls_one_after_the_other(start: dict, batch: list[Call]):
    together, alone = FakeHost(), FakeHost()
    together.vms.update(start)
    alone.vms.update(start)
    want = one_by_one([copy(c) for c in batch], alone)
    assert run(batch, together) == want
    assert together.vms == alone.vms
    order = [c for step in steps(batch) for c in step]  # every call once
    assert sorted(map(id, order)) == sorted(map(id, batch))
    for c in batch:  # and each VM's calls in arrival order
        mine = [x for x in order if x.name == c.name]
        assert mine == [x for x in batch if x.name == c.name]
