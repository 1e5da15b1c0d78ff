"""fast_parse and argparse agree: whatever the fast reader accepts, argparse reads the same
way; whatever argparse rejects, the fast reader leaves to it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute.cli import args as spec
from fireroute.cli import parser
from fireroute.errors import UsageError

UP_FLAGS = [o.flag for o in spec.UP_COMMAND]
DOWN_FLAGS = [o.flag for o in spec.DOWN]
VALUES = ["vm1", "a-b", "", "-x", "-1", "7", "x7", "--", "-h", "=", "fr", "10.0.0.0/16", "0x10"]
ODD = ["-h", "--help", "--", "--tab", "--socket", "--unknown", "-", "--count=3", "--json=1"]


def token(flags: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(flags),
        st.sampled_from(VALUES),
        st.sampled_from(ODD),
        st.builds(lambda f, v: f"{f}={v}", st.sampled_from(flags), st.sampled_from(VALUES)),
    )


def argparse_reads(argv: list[str]) -> dict | None:
    try:
        return vars(parser.parse(argv))
    except (UsageError, SystemExit):
        return None


def agree(argv: list[str]) -> None:
    fast = spec.parse_hot(argv)
    full = argparse_reads(argv)
    if fast is None:
        return  # argparse decides (and is what runs)
    assert full is not None, f"fast path accepted what argparse rejects: {argv}"
    got = vars(fast)
    for key, value in got.items():
        assert full[key] == value, (argv, key)
    assert set(full) - set(got) <= firecracker_dests(), argv  # read only with --socket


def firecracker_dests() -> set[str]:
    import argparse

    from fireroute.cli.firecracker_args import configure_up

    p = argparse.ArgumentParser()
    configure_up(p)
    return {a.dest for a in p._actions} - {"help"}


@settings(max_examples=400)
@given(st.lists(token(UP_FLAGS), max_size=7))
def test_up(tokens: list[str]) -> None:
    agree(["up", *tokens])


@settings(max_examples=200)
@given(st.lists(token(DOWN_FLAGS), max_size=5))
def test_down(tokens: list[str]) -> None:
    agree(["down", *tokens])


def test_the_plain_forms_take_the_fast_path() -> None:
    for argv in (
        ["up", "vm1"],
        ["up", "vm1", "--table", "fr", "--json"],
        ["up", "--count=3", "--prefix", "v", "--dns", "1.1.1.1", "--dns", "9.9.9.9"],
        ["down", "vm1", "vm2", "--state", "/tmp/s.db"],
        ["down", "--all"],
    ):
        assert spec.parse_hot(argv) is not None, argv
        agree(argv)
    for argv in (["up", "vm1", "--socket", "/s"], ["up", "-h"], ["up", "--tab", "x"], ["ls"]):
        assert spec.parse_hot(argv) is None, argv


def well_formed(opts: tuple[spec.Opt, ...]) -> st.SearchStrategy[list[str]]:
    def pair(o: spec.Opt) -> st.SearchStrategy[list[str]]:
        if o.kind == spec.FLAG:
            return st.just([o.flag])
        value = st.sampled_from(
            ["7", "fr", "x-y", "1.1.1.1", ""] if o.kind != spec.INT else ["3", "+4", "0", "x"]
        )
        return st.one_of(value.map(lambda v: [o.flag, v]), value.map(lambda v: [f"{o.flag}={v}"]))

    options = st.lists(st.sampled_from(opts).flatmap(pair), max_size=5).map(lambda xs: sum(xs, []))
    names = st.lists(st.sampled_from(["vm1", "vm-2", "a.b"]), max_size=3)
    return st.tuples(options, names, options).map(lambda t: t[0] + t[1] + t[2])


@settings(max_examples=300)
@given(well_formed(spec.UP_COMMAND))
def test_well_formed_up_lines_are_read_fast_and_alike(tokens: list[str]) -> None:
    argv = ["up", *tokens]
    if "x" not in tokens and not any(t.endswith("=x") for t in tokens):
        assert spec.parse_hot(argv) is not None, argv
    agree(argv)
