"""Executors take typed operations (issue 23, step 17), without a kernel: the in-process
executor's encodings come from a step's operations (never from its printed text), and a
failure reaches kernel/apply.py with its kind, whichever executor found it."""

import errno
from ipaddress import IPv4Network

import pytest

from fireroute.errors import AlreadyExists, KernelError, PartialFailure
from fireroute.kernel import inproc, nftnl, rtnl, tun
from fireroute.kernel.apply import Executor, Failure, Ran
from fireroute.kernel.kinds import BUSY, DENIED, EXISTS, MISSING, OTHER
from fireroute.model import Published
from fireroute.plan.compiler import compile
from fireroute.plan.diff import ALL, diff
from fireroute.plan.ops import DELETE, Act, OpStep
from fireroute.plan.steps import IP, NFT, Plan, Step
from fireroute.want import render
from tests.unit.test_plan import vm

ID = "5ca1ab1e"


def want(*vms):
    return render.desired(list(vms), None, ID)


def second_vm_steps(first, second) -> tuple[list[Step], list[Step]]:
    """The compiler's up and down of ``second`` beside ``first``."""
    one, two = want(first), want(first, second)
    return compile(diff(one, two, ALL, ID)), compile(diff(two, one, ALL, ID))


KINDS = {
    "plain": {"allow_peers": True, "allow_host_ports": ((22, "tcp"),)},
    "published": {"publish": (Published(None, 8080, 80, "tcp"),)},  # map elements
    "policy": {"egress": "none", "allow_out": (IPv4Network("192.0.2.0/24"),)},  # intervals
    "bridge": {"mode": "bridge", "bridge": "br9", "bridge_address": "10.9.0.1/24"},
}


def pair(kind: str) -> tuple:
    """Two VMs of a kind (the first makes the table parts the kind needs)."""
    kw = KINDS[kind]
    if kind == "bridge":
        return vm("a", 0, guest="10.9.0.4/24", **kw), vm("b", 1, guest="10.9.0.5/24", **kw)
    return vm("a", 0, **kw), vm("b", 1, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_element_steps_encode_from_their_operations(kind: str) -> None:
    """A step of element operations is encoded from its typed elements: each element in the
    batch by its fields, into a set the batch declares (a map's elements are left to nft:
    nftnl.build refuses a map); a step making sets or chains is not encoded."""
    from fireroute.want.nft import MAPS

    up, down = second_vm_steps(*pair(kind))
    encoded = 0
    for s in (s for s in up + down if s.tool == NFT):
        tables = nftnl.of_steps([s])
        if any(a.obj.kind != "nft element" for a in s.ops):
            assert tables is None
            continue
        assert tables is not None and len(tables) == 1, s.text  # (one table a step)
        (ops,) = tables
        encoded += 1
        acts = [a for a in s.ops]
        elems = [(a.obj.set, a.obj.value.partition(" : ")[0]) for a in acts]
        assert (ops.family, ops.table) == (acts[0].obj.family, acts[0].obj.table)
        assert {name for name, _ in elems} <= set(ops.declared or {}) | set(ops.maps)
        assert all(name not in MAPS for name in ops.declared or {})
        written = {(n, " . ".join(f)) for _, n, fs in ops.ops for f, _ in fs}
        assert {e for e in elems} <= written, s.text  # each element, by its typed fields
    assert encoded >= 1


def test_only_element_operations_are_encoded() -> None:
    up, _ = compile(diff({}, want(vm("a", 0)), ALL, ID)), None
    table = [s for s in up if s.tool == NFT]
    assert table and all(nftnl.of_steps([s]) is None for s in table)  # a table made: nft
    plain = Step(NFT, 'add element ip firecracker taps { "fr-a" }\n', "add")
    assert nftnl.of_steps([plain]) is None  # no operations: nft runs its script


def test_compiled_ip_steps_encode_from_their_objects() -> None:
    up, down = second_vm_steps(vm("a", 0), vm("b", 1))
    ips = [s for s in up + down if s.tool == IP]
    assert [s.text.split()[0] for s in ips] == ["tuntap", "address", "link", "link"]
    assert all(inproc.encode(s) is not None for s in ips)


def test_compiled_regroup_runs_in_process() -> None:
    """The compiler's regrouping steps and its group delete carry what their lines do (a
    link set to the group, the group deleted): in-process; the control,
    the same line carrying the tap's delete instead, is left to ip."""
    both = want(vm("a", 0), vm("b", 1), vm("c", 2))
    down = compile(diff(both, want(vm("a", 0)), ALL, ID))
    marks = [s for s in down if s.tool == IP and "group 4152" in s.text]
    assert [s.text.split()[1] for s in marks] == ["set", "set", "del"]
    assert all(inproc.encode(s) is not None for s in marks)
    tap = marks[0].ops[0].obj
    assert inproc.encode(OpStep(IP, marks[0].text, "", ops=[Act(DELETE, tap)])) is None


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (tun.TunError(errno.EBUSY, "ioctl(TUNSETIFF)"), EXISTS),  # a name taken (EXCL)
        (tun.TunError(errno.EBUSY, "ioctl(TUNSETPERSIST)"), BUSY),
        (tun.TunError(errno.EPERM, "ioctl(TUNSETIFF)"), DENIED),
        (rtnl.RtnlError(errno.EEXIST, "ipv4: Address already assigned"), EXISTS),
        (rtnl.RtnlError(errno.ENODEV), MISSING),  # link del group of an empty group
        (rtnl.NoDevice("fr-x"), MISSING),
        (inproc.BadMaster("br9"), MISSING),
        (rtnl.RtnlError(errno.EINVAL, "bad"), OTHER),
    ],
)
def test_failures_are_kinds_of_their_errno(exc: OSError, kind: str) -> None:
    got = inproc.failure(exc)
    assert got.kind == kind and got.text == str(exc)
    assert Failure.of(str(exc)).kind == kind  # ip's message says the same (apply.py's way)


class Canned(Executor):
    """An executor whose ``ip`` groups answer with given failures, as the in-process one
    does: by kind, with a message that names no kind."""

    def __init__(self, answers: list[dict[int, Failure]]) -> None:
        super().__init__(fault="")
        self.answers = answers
        self.ran: list[list[str]] = []

    def _start_group(self, group, force):
        self.ran.append([s.text for s in group])
        return Ran(self.answers.pop(0) if self.answers else {})


def step(text: str, exclusive: bool = False, undo: str | None = None) -> Step:
    undone = (Step(IP, undo, f"undo {text}", "v"),) if undo else ()
    return Step(IP, text, f"do {text}", "v", undo=undone, exclusive=exclusive)


def test_exists_by_kind_is_already_exists() -> None:
    ex = Canned([{}, {0: Failure("taken", EXISTS)}])
    plan = Plan([step("a", undo="ua"), Step(NFT, "n", "do n", "v", exclusive=True)])
    with pytest.raises(AlreadyExists, match="taken"):
        ex.apply_all(plan)
    assert ex.ran[-1] == ["ua"]  # what ran before it was undone
    ex = Canned([{0: Failure("taken", OTHER)}])  # control: another kind is a plain failure
    with pytest.raises(KernelError) as err:
        ex.apply_all(Plan([step("a", exclusive=True)]))
    assert type(err.value) is KernelError


def test_missing_by_kind_is_done_in_best_effort() -> None:
    ex = Canned([{0: Failure("gone", MISSING), 2: Failure("refused", DENIED)}])
    with pytest.raises(PartialFailure) as err:
        ex.apply_best_effort(Plan([step("x"), step("y"), step("z")]))
    assert len(err.value.failures) == 1 and "refused" in str(err.value)
    Canned([{0: Failure("gone", MISSING)}]).apply_best_effort(Plan([step("x")]))  # control
