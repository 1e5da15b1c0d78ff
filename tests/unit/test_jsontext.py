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


def test_an_error_inside_a_container_is_a_value_error_without_the_json_package():
    """_json reports an error inside an array or object through json.decoder, which the
    lean path never imports: found by the CNI fuzz through the real process (a SystemError
    traceback). In a fresh interpreter without json, each is ValueError; valid text reads."""
    import subprocess
    import sys
    from pathlib import Path

    src = Path(jsontext.__file__).resolve().parents[1]
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from fireroute import jsontext\n"
        "assert jsontext.loads('{\"a\": [1, {\"b\": null}]}') == {'a': [1, {'b': None}]}\n"
        "for text in ('{\"a\":01}', '[01]', '{\"a\": 0 1}', '[1,]', '{\"a\" 1}'):\n"
        "    try:\n"
        "        jsontext.loads(text)\n"
        "    except ValueError:\n"
        "        continue\n"
        "    raise SystemExit(f'read {text!r}')\n"
        "assert 'json' not in sys.modules and 'json.decoder' not in sys.modules\n"
        "print('ok')\n"
    )
    p = subprocess.run([sys.executable, "-S", "-c", code, str(src)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout == "ok\n", p.stderr
