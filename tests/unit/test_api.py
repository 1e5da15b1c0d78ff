"""fireroute.Host as the one core API, without a kernel: the doors' verbs take the model's
options or the API's keyword options through the same checks, answer with typed results, and
a snapshot Vm hands out the record the renders take."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

import fireroute
from fireroute.api import Outcome
from fireroute.errors import NotFound, UsageError
from fireroute.model import Options, Vm
from fireroute.plan.steps import IP, Plan, Step, as_commands


def test_outcome_prints_its_plan():
    plan = Plan([Step(IP, "link add fr-a type tuntap mode tap", 'create tap "fr-a"')])
    done = Outcome([], plan, changed=True, warnings=["w"])
    assert done.steps == 1 and done.commands == as_commands(plan) and done.commands
    assert done.changed and done.warnings == ["w"]
    nothing = Outcome([], None)  # a verb with no plan: no commands, nothing changed
    assert (nothing.steps, nothing.commands, nothing.changed, nothing.warnings) == (
        0,
        "",
        False,
        [],
    )
    assert Outcome([], plan).changed  # by default: changed when there was something to run


def test_a_missing_state_file_has_no_vms(tmp_path):
    host = fireroute.Host(tmp_path / "state.db")
    assert host.ls() == [] and host.list() == []
    with pytest.raises(NotFound, match='vm "web-1" is not known to the state file'):
        host.show("web-1")
    with pytest.raises(NotFound):
        host.get("web-1")
    assert not (tmp_path / "state.db").exists()  # reading made no state file


@pytest.mark.parametrize("options", [Options(), {}])
def test_bring_up_checks_a_batch_before_anything(tmp_path, options):
    """The model's Options (the CLI) and the API's keyword options meet the same checks."""
    host = fireroute.Host(tmp_path / "state.db")
    with pytest.raises(UsageError, match="a vm name was given twice"):
        host.bring_up(["a", "a"], options)
    with pytest.raises(UsageError, match="--tap names one tap"):
        host.bring_up(["a", "b"], Options(tap="fr-x") if options == Options() else {"tap": "fr-x"})
    assert not (tmp_path / "state.db").exists()


def test_keyword_options_are_checked_as_the_cli_checks_its_flags(tmp_path):
    host = fireroute.Host(tmp_path / "state.db")
    with pytest.raises(UsageError, match="--block-size"):
        host.bring_up(["a"], {"block_size": "big"})
    with pytest.raises(UsageError, match="--block-size"):
        host.plan_up("a", block_size="big")


def test_down_names_at_least_one_vm(tmp_path):
    with pytest.raises(UsageError, match="name at least one vm"):
        fireroute.Host(tmp_path / "state.db").down()


def test_a_snapshot_hands_out_its_record():
    vm = Vm("web-1", IPv4Network("172.16.0.4/30"), "fr-web-1", "06:00:AC:10:00:06", "eth0",
            Options(), "active")  # fmt: skip
    snap = fireroute.Vm(vm)
    assert snap.record is vm and snap.name == "web-1" and snap.tap == "fr-web-1"
    assert "record" not in snap.__slots__  # a read-only view, not a second copy
