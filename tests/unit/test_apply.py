"""The executor against a scripted runner: batching, rollback order, best-effort removal."""

import pytest

from fireroute.errors import KernelError, PartialFailure
from fireroute.kernel.apply import Executor, _ipt_committed, _ipt_failed
from fireroute.kernel.run import Result
from fireroute.plan.steps import IP, IPTABLES, NFT, Plan, Step


class Script:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, argv, stdin=None):
        self.calls.append((argv, stdin))
        return self.answers.pop(0) if self.answers else Result(0, "", "")


def mk(tool, text, undo=None):
    return Step(
        tool, text, f"do {text}", "vm1", undo=(Step(tool, undo, f"undo {text}"),) if undo else ()
    )


def test_batches_consecutive_steps_into_one_process():
    run = Script([])
    plan = Plan([mk(IP, "a"), mk(IP, "b"), mk(NFT, "x"), mk(NFT, "y")])
    Executor(run, fault="").apply_all(plan)
    assert [c[0][0] for c in run.calls] == ["ip", "nft"]
    assert run.calls[0][1] == "a\nb\n"


def test_ip_failure_mid_batch_undoes_only_what_succeeded_in_reverse():
    run = Script([Result(0, "", ""), Result(1, "", "Error: boom\nCommand failed -:2\n")])
    plan = Plan([mk(NFT, "n1", "un1"), mk(IP, "a", "ua"), mk(IP, "b", "ub"), mk(IP, "c", "uc")])
    with pytest.raises(KernelError, match='cannot do b for vm "vm1": Error: boom'):
        Executor(run, fault="").apply_all(plan)
    undo_calls = run.calls[2:]
    assert undo_calls[0] == (["ip", "-force", "-batch", "-"], "ua\n")
    assert undo_calls[1] == (["nft", "-f", "-"], "un1\n")


def test_best_effort_goes_on_and_reports_all():
    run = Script(
        [
            Result(
                1,
                "",
                'Cannot find device "x"\nCommand failed -:1\nError: perm\nCommand failed -:2\n',
            ),
            Result(1, "", "Error: nft broke\n"),
            Result(0, "", ""),
        ]
    )
    plan = Plan([mk(IP, "gone"), mk(IP, "denied"), mk(NFT, "n"), Step("ip", "later", "later")])
    with pytest.raises(PartialFailure) as err:
        Executor(run, fault="").apply_best_effort(plan)
    assert len(err.value.failures) == 2
    assert "perm" in str(err.value) and "nft broke" in str(err.value)
    assert len(run.calls) == 3  # it went on to the last group


def test_injected_fault_rolls_back():
    run = Script([])
    plan = Plan([mk(IP, "a", "ua"), mk(NFT, "n", "un")])
    with pytest.raises(KernelError, match="injected"):
        Executor(run, fault="fail@2").apply_all(plan)
    assert [c[1] for c in run.calls[2:]] == ["un\n", "ua\n"]


def test_waves_pair_ip_with_one_nf_tables_writer_in_the_callers_namespace():
    from fireroute.plan.steps import IPTABLES, SYSCTL, waves

    def shape(steps):
        return [
            [g[0].tool + (f"@{g[0].netns}" if g[0].netns else "") for g in w] for w in waves(steps)
        ]

    ns = Step(IP, "x", "x", netns="n1")
    assert shape([mk(IP, "a"), mk(NFT, "b")]) == [["ip", "nft"]]
    assert shape([mk(NFT, "b"), mk(IPTABLES, "c"), mk(IP, "a")]) == [["nft"], ["iptables", "ip"]]
    assert shape([mk(IP, "a"), Step(SYSCTL, "k=1", "k"), mk(NFT, "b")]) == [["ip", "sysctl", "nft"]]
    assert shape([mk(IP, "a"), ns, mk(NFT, "b")]) == [["ip"], ["ip@n1"], ["nft"]]
    assert shape([mk(IP, "a"), mk(NFT, "b"), mk(IP, "c")]) == [["ip", "nft"], ["ip"]]
    # an ip group after a host sysctl waits for it (written after the wave's processes): an
    # IPv6 address after the sysctl switching IPv6 on (restore after disable_ipv6=1)
    on = Step(SYSCTL, "net/ipv6/conf/fr-a/disable_ipv6=0", "v6")
    assert shape([on, mk(IP, "a"), mk(NFT, "b")]) == [["sysctl"], ["ip", "nft"]]
    assert shape([Step(SYSCTL, "k=1", "k", netns="n1"), mk(IP, "a")]) == [["sysctl@n1"], ["ip"]]


def test_a_failure_in_a_wave_undoes_the_groups_that_ran_beside_it():
    run = Script([Result(1, "", "Error: no\nCommand failed -:1\n"), Result(0, "", "")])
    plan = Plan([mk(IP, "a", "ua"), mk(NFT, "n", "un")])
    with pytest.raises(KernelError, match="cannot do a"):
        Executor(run, fault="").apply_all(plan)
    assert [c[1] for c in run.calls] == ["a\n", "n\n", "un\n"]


def test_a_failed_wave_writes_no_host_sysctl(monkeypatch):
    from fireroute.kernel import apply
    from fireroute.plan.steps import SYSCTL

    written = []
    monkeypatch.setattr(apply, "_write_sysctl", lambda text: written.append(text) or {})
    run = Script([Result(1, "", "Error: busy\nCommand failed -:1\n"), Result(0, "", "")])
    plan = Plan([mk(IP, "a", "ua"), Step(SYSCTL, "net/ipv6/conf/eth0/disable_ipv6=1", "v6")])
    plan.add(mk(NFT, "n", "un"))
    with pytest.raises(KernelError, match="cannot do a"):
        Executor(run, fault="").apply_all(plan)
    assert written == []  # the tap was not made: a device of that name is not ours
    ok = Script([])
    Executor(ok, fault="").apply_all(plan)
    assert written == ["net/ipv6/conf/eth0/disable_ipv6=1"]


def test_a_program_missing_mid_wave_undoes_what_ran():
    from fireroute.errors import MissingTool
    from fireroute.plan.steps import IPTABLES

    class Missing(Script):
        def __call__(self, argv, stdin=None):
            if argv[0] == "iptables-nft-restore":
                raise MissingTool("iptables-nft-restore not found: install the iptables package")
            return super().__call__(argv, stdin)

    run = Missing([])
    plan = Plan([mk(IP, "a", "ua"), Step(IPTABLES, "-A X", "rule", table="filter")])
    with pytest.raises(MissingTool):
        Executor(run, fault="").apply_all(plan)
    assert [c[1] for c in run.calls] == ["a\n", "ua\n"]


def test_exists_with_a_failed_rollback_is_not_taken_for_nothing_changed():
    from fireroute.errors import AlreadyExists

    run = Script(
        [
            Result(0, "", ""),
            Result(1, "", "Error: Could not process rule: File exists\n"),
            Result(1, "", "Error: perm\nCommand failed -:1\n"),  # the undo of the ip group
        ]
    )
    excl = Step(NFT, "create table ip t", "create table", "vm1", exclusive=True)
    plan = Plan([mk(IP, "a", "ua"), excl])
    with pytest.raises(KernelError) as err:
        Executor(run, fault="").apply_all(plan)
    assert not isinstance(err.value, AlreadyExists) and "rollback failed" in str(err.value)
    clean = Script([Result(0, "", ""), Result(1, "", "Error: File exists\n")])
    with pytest.raises(AlreadyExists):
        Executor(clean, fault="").apply_all(plan)


def test_an_injected_fault_mid_wave_still_undoes_the_whole_wave():
    run = Script([])
    plan = Plan([mk(IP, "a", "ua"), mk(NFT, "n", "un")])
    with pytest.raises(KernelError, match="after process 1"):
        Executor(run, fault="fail@1").apply_all(plan)
    assert [c[1] for c in run.calls] == ["a\n", "n\n", "un\n", "ua\n"]


@pytest.mark.parametrize(
    "text",
    [
        "Error: Could not process rule: File exists",
        "RTNETLINK answers: File exists",
        "Error: Address already assigned.",
        "Error: ipv6: address already assigned.",
        "Error: Exclusivity flag on, cannot modify.",
        "ioctl(TUNSETIFF): Device or resource busy",
    ],
)
def test_an_exclusive_step_that_finds_its_object_there_raises_already_exists(text):
    """kernel/kinds.py's ``exists``, whichever words the kernel used for it."""
    from fireroute.errors import AlreadyExists

    excl = Step(NFT, "create table ip t", "create table", "vm1", exclusive=True)
    with pytest.raises(AlreadyExists):
        Executor(Script([Result(1, "", text + "\n")]), fault="").apply_all(Plan([excl]))
    # the controls: the same words on a step that is not exclusive, and another refusal on
    # an exclusive one, are plain failures
    plain = Step(NFT, "add table ip t", "add table", "vm1")
    with pytest.raises(KernelError) as err:
        Executor(Script([Result(1, "", text + "\n")]), fault="").apply_all(Plan([plain]))
    assert not isinstance(err.value, AlreadyExists)
    denied = Result(1, "", "Error: Operation not permitted\n")
    with pytest.raises(KernelError) as err:
        Executor(Script([denied]), fault="").apply_all(Plan([excl]))
    assert not isinstance(err.value, AlreadyExists)


@pytest.mark.parametrize(
    "text",
    [
        "Error: ipv4: Address not found.\nRTNETLINK answers: Cannot assign requested address",
        "RTNETLINK answers: No such process",
        "Error: Cannot find specified qdisc on specified device.",
        'Invalid "netns" value',
    ],
)
def test_a_removal_of_what_is_gone_is_done(text):
    """``missing`` (kernel/kinds.py) is done for a best-effort removal: an address, a route,
    a qdisc or a namespace already gone; a refusal beside it is still reported, and an nft
    transaction's failure always is (it changed nothing)."""
    err = f"{text}\nCommand failed -:1\nError: perm\nCommand failed -:2\n"
    run = Script([Result(1, "", err), Result(1, "", text + "\n")])
    plan = Plan([mk(IP, "gone"), mk(IP, "denied"), mk(NFT, "n")])
    with pytest.raises(PartialFailure) as failed:
        Executor(run, fault="").apply_best_effort(plan)
    assert [f.action for f in failed.value.failures] == ["do denied", "do n"]


def test_an_iptables_group_undoes_the_tables_committed_before_its_failure():
    """iptables-nft-restore commits table by table and names the line it failed at, in one of
    three forms (a line it could not take; the kernel refusing a table's commit; a rule to
    delete not there): the failing step is the rule on that line (its table's first for the
    ``*table`` or COMMIT line), the sections before it were committed and are undone, the
    failing one and those after were not; a message naming no line: the first step, none."""
    group = [Step(IPTABLES, f"-A {c} -j DROP", c, table=t)
             for t, c in (("filter", "FORWARD"), ("filter", "INPUT"), ("raw", "PREROUTING"),
                          ("nat", "POSTROUTING"))]  # fmt: skip

    # *filter 1, rules 2-3, COMMIT 4; *raw 5, 6, COMMIT 7; *nat 8, 9, COMMIT 10
    def failed(err: str) -> tuple[int, list[str]]:
        at = _ipt_failed(err, group)
        return at, [s.table for s in _ipt_committed(group, at)]

    assert failed("x\nError occurred at line: 10\n") == (3, ["filter", "filter", "raw"])
    assert failed("Error occurred at line: 9") == (3, ["filter", "filter", "raw"])
    assert failed("line 9: RULE_APPEND failed (Invalid argument): rule in chain POSTROUTING") == (
        3, ["filter", "filter", "raw"]
    )  # fmt: skip
    assert failed("line 6: CHAIN_ADD failed (Operation not supported)") == (2, ["filter"] * 2)
    assert failed("iptables-nft-restore: line 3 failed: Bad rule (does a matching") == (1, [])
    assert failed("Error occurred at line: 7") == (2, ["filter", "filter"])
    assert failed("Error occurred at line: 5") == (2, ["filter", "filter"])
    assert failed("Error occurred at line: 2") == (0, [])
    assert failed("iptables-nft-restore: cannot open socket") == (0, [])
    assert failed("a line 12 of nothing: Error occurred at line: 99") == (0, [])
    assert failed("past the deadline 6: gave up") == (0, [])
