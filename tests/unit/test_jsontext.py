"""jsontext agrees with the json package on every plain value."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fireroute import jsontext

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values, st.sampled_from([None, 0, 2, 4]))
def test_dumps_is_json_dumps(value: object, indent: int | None) -> None:
    assert jsontext.dumps(value, indent=indent) == json.dumps(value, indent=indent)


@given(values, st.sampled_from([None, 2]))
def test_loads_reads_what_json_writes(value: object, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert jsontext.loads(text) == json.loads(text)


@given(st.lists(values, max_size=4))
def test_several_documents(docs: list[object]) -> None:
    text = "\n".join(json.dumps(d) for d in docs) + "\n"
    assert jsontext.loads_all(text) == [json.loads(json.dumps(d)) for d in docs]


@pytest.mark.parametrize("bad", ["{", "[1,]", "NaN", "{'a': 1}", "1 2", ""])
def test_invalid_text_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        jsontext.loads(bad)


def test_unserializable_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        jsontext.dumps({"a": object()})
    with pytest.raises(ValueError):
        jsontext.dumps(float("nan"))
