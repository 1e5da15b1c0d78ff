"""kernel/nsexec.py without root: a namespace that cannot be entered, for whatever reason, is
``Unenterable`` (the executor then leaves the group to ``nsenter``, with its message), never
an escaped exception (on a cold CNI call that would be a traceback, not a CNI error)."""

from __future__ import annotations

import pytest

from fireroute.kernel import nsexec


@pytest.mark.parametrize(
    "failure",
    [OSError(1, "Operation not permitted"), AttributeError("setns"), ImportError("ctypes")],
)
def test_any_failure_to_enter_is_unenterable(monkeypatch, tmp_path, failure):
    def refuse(fd: int) -> None:
        raise failure

    monkeypatch.setattr(nsexec, "_setns", refuse)
    (tmp_path / "net").write_text("")
    with pytest.raises(nsexec.Unenterable):
        nsexec.in_namespace(str(tmp_path / "net"), lambda: "ran")


def test_entered_the_function_runs_and_its_result_comes_back(monkeypatch, tmp_path):
    """The control: entered (setns stubbed), the function's result is the call's."""
    monkeypatch.setattr(nsexec, "_setns", lambda fd: None)
    (tmp_path / "net").write_text("")
    assert nsexec.in_namespace(str(tmp_path / "net"), lambda: "ran") == "ran"  # type: ignore[arg-type,comparison-overlap]


def test_a_missing_namespace_is_unenterable(tmp_path):
    with pytest.raises(nsexec.Unenterable, match="No such file"):
        nsexec.in_namespace(str(tmp_path / "gone"), lambda: "ran")  # type: ignore[arg-type,return-value]
