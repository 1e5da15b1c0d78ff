"""The hand-written character-class checks agree with the regular expressions they replace."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from fireroute import model

ALPHABET = "aZ09._-:_fF+ é/\n"
text = st.text(alphabet=ALPHABET, max_size=70)

CASES = [
    (
        lambda t: model.fits(t, model.ALNUM, model.NAME_CHARS, 63),
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}",
    ),
    (lambda t: model.fits(t, model.LETTERS, model.TABLE_CHARS, 32), r"[A-Za-z][A-Za-z0-9_-]{0,31}"),
    (lambda t: model.fits(t, model.ID_CHARS, model.ID_CHARS, 64), r"[A-Za-z0-9_]{1,64}"),
    (model.is_mac, r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"),
]


@given(text, st.sampled_from(range(len(CASES))))
def test_same_answer_as_the_regex(t: str, case: int) -> None:
    check, pattern = CASES[case]
    assert check(t) == bool(re.fullmatch(pattern, t))


def test_examples() -> None:
    assert model.is_mac("06:00:AC:10:00:02") and not model.is_mac("06:00:AC:10:00:2")
    assert model.fits("vm-1", model.ALNUM, model.NAME_CHARS, 63)
    assert not model.fits("-vm", model.ALNUM, model.NAME_CHARS, 63)
    assert not model.fits("", model.ALNUM, model.NAME_CHARS, 63)


@given(st.lists(st.text("0aFg:", max_size=3), min_size=5, max_size=7).map(":".join))
def test_mac_near_misses(t: str) -> None:
    assert model.is_mac(t) == bool(re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", t))
