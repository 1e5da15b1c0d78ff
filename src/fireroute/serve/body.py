"""A request's JSON body, read strictly: whatever a client sends is either a JSON object of
plain values or a 400 naming what is wrong, never a 500.

RFC 8259 JSON in UTF-8 only: no ``NaN`` or ``Infinity``, no number beyond a float's range or
of more than :data:`DIGITS` digits, no lone surrogate (``"\\ud800"``: no interface or file
name can hold one), and no key twice in one object (readers differ on which one wins, so the
daemon takes neither). Nesting is bounded by :data:`DEPTH`: an option body is an object of
strings, numbers, booleans and lists of strings; deeper is refused, whether the parser's own
recursion limit or the walk afterwards finds it.
"""

from __future__ import annotations

import json
import math

from fireroute.serve.framing import Reply

DEPTH = 8
DIGITS = 30


def bad(message: str) -> Reply:
    return Reply(400, "UsageError", f"invalid JSON body: {message}")


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise bad(f'key "{key[:40]}" given twice')
            seen.add(key)
    return data


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise bad(f"number {text[:40]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > DIGITS:
        raise bad(f"number {text[:40]}... has more than {DIGITS} digits")
    return int(text)


def _constant(name: str) -> object:
    raise bad(f"{name} is not a JSON number")


DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=_float, parse_int=_int, parse_constant=_constant
)


def options(raw: bytes) -> dict[str, object]:
    """The JSON object ``raw`` holds (empty or blank: ``{}``)."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"not UTF-8 (byte {exc.start})") from None
    try:
        data = DECODER.decode(text)
    except RecursionError:
        raise bad(f"nested more than {DEPTH} deep") from None
    except ValueError as exc:
        raise bad(str(exc)) from None
    if not isinstance(data, dict):
        raise Reply(400, "UsageError", "the body must be a JSON object of options")
    _walk(data)
    return data


def _walk(data: object) -> None:
    """Refuse nesting deeper than DEPTH and strings that are not text (lone surrogates)."""
    todo: list[tuple[object, int]] = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise bad(f"string {value[:40]!r} holds a lone surrogate") from None
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > DEPTH:
            raise bad(f"nested more than {DEPTH} deep")
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        todo.extend((v, depth + 1) for v in items)
