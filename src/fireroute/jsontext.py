"""JSON for the per-VM path without the ``json`` package.

``import json`` pulls in ``re`` (and ``re`` pulls in ``enum``): ~8 ms of a command that runs
in ~20 ms. Parsing here uses CPython's own C scanner (``_json``, what ``json.loads`` runs
underneath); writing covers the plain values fireroute emits (dict, list, tuple, str, int,
float, bool, None) and gives exactly what ``json.dumps`` gives for them, ``indent`` included.
Where ``_json`` is missing (another Python), the ``json`` package does the work.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class _Context:
    """What the C scanner reads off a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)
    memo: dict[str, str] = {}


_scan: Callable[[str, int], tuple[object, int]] | None
try:
    from _json import encode_basestring_ascii as _quote
    from _json import make_scanner
except ImportError:  # pragma: no cover - CPython always has _json
    _scan = None
else:
    # typeshed asks for a make_scanner as the context (its own TODO says a duck type); the C
    # scanner reads only the attributes _Context has
    _scan = make_scanner(_Context())  # type: ignore[arg-type]


def loads_all(text: str) -> list[object]:
    """Every JSON document in ``text`` (documents separated by whitespace, as ``ip -j
    -batch`` prints them); ValueError on anything else."""
    out: list[object] = []
    if _scan is None:  # pragma: no cover
        import json

        dec, i = json.JSONDecoder(), 0
        text = text.strip()
        while i < len(text):
            doc, i = dec.raw_decode(text, i)
            out.append(doc)
            while i < len(text) and text[i].isspace():
                i += 1
        return out
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\n\r":
            i += 1
        if i == n:
            return out
        try:
            doc, i = _scan(text, i)
        except StopIteration as stop:
            raise ValueError(f"invalid JSON at character {stop.value}") from None
        except SystemError:
            # an error inside an array or object: _json raises json.decoder's JSONDecodeError,
            # which it looks up only among the modules already imported, and json is not (it
            # then returns an error without an exception)
            raise ValueError(f"invalid JSON in the document at character {i}") from None
        finally:
            _Context.memo.clear()
        out.append(doc)


def loads(text: str) -> object:
    docs = loads_all(text)
    if len(docs) != 1:
        raise ValueError(f"expected one JSON document, found {len(docs)}")
    return docs[0]


def dumps(obj: object, indent: int | None = None) -> str:
    """``json.dumps(obj, indent=indent)`` for plain values."""
    parts: list[str] = []
    _write(obj, parts, indent, 0)
    return "".join(parts)


def _write(obj: object, out: list[str], indent: int | None, depth: int) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(_quote(obj))
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError(f"{obj!r} is not valid JSON")
        out.append(float.__repr__(obj))
    elif isinstance(obj, (list, tuple, dict)):
        items = list(obj.items()) if isinstance(obj, dict) else list(obj)
        open_, close = ("{", "}") if isinstance(obj, dict) else ("[", "]")
        if not items:
            out.append(open_ + close)
            return
        if indent is None:
            sep, first, last = ", ", "", ""
        else:
            pad = "\n" + " " * (indent * (depth + 1))
            sep, first, last = "," + pad, pad, "\n" + " " * (indent * depth)
        out.append(open_ + first)
        for k, item in enumerate(items):
            if k:
                out.append(sep)
            if isinstance(obj, dict):
                key, item = item
                if not isinstance(key, str):
                    raise TypeError(f"keys must be str, not {type(key).__name__}")
                out.append(_quote(key) + ": ")
            _write(item, out, indent, depth + 1)
        out.append(last + close)
    else:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
