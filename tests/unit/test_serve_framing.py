"""The daemon's framing (fireroute.serve.framing) and JSON bodies (fireroute.serve.body),
without a daemon: each refusal beside the same request made well, and generated input that
ends in a result or a Reply, never another exception."""

from __future__ import annotations

import http.client
import io
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute.serve import body, framing
from fireroute.serve.framing import Reply

GOOD_HEAD = [b"Host: x\r\n", b"Content-Type: application/json\r\n", b"Content-Length: 18\r\n"]


def length(lines: list[bytes], version: str = "HTTP/1.1", limit: int = 65536) -> int:
    """What the daemon does: the library parses through a Recorder, framing judges."""
    rec = framing.Recorder(io.BytesIO(b"".join(lines) + b"{ignored body}"))
    headers = http.client.parse_headers(rec)  # type: ignore[arg-type]
    return framing.body_length(rec.lines, headers, version, limit)


def refused(lines: list[bytes], version: str = "HTTP/1.1") -> Reply:
    with pytest.raises(Reply) as info:
        length(lines, version)
    assert "\n" not in str(info.value)
    return info.value


def test_a_well_formed_head_gives_its_length():
    assert length([*GOOD_HEAD, b"\r\n"]) == 18
    assert length([b"Host: x\n", b"Content-Length:18 \n", b"\n"]) == 18  # LF alone, OWS
    assert length([b"Host: x\r\n", b"\r\n"]) == 0  # no body
    assert length([b"Content-Length: 0\r\n", b"\r\n"], "HTTP/1.0") == 0  # 1.0: Host optional


@pytest.mark.parametrize(
    ("lines", "status", "needle"),
    [
        ([b"Content-Length: 18\r\n", b"Content-Length: 18\r\n"], 400, "more than once"),
        ([b"Content-Length: 18\r\n", b"Content-Length: 0\r\n"], 400, "more than once"),
        ([b"Content-Length: 18, 18\r\n"], 400, "Content-Length"),
        ([b"Content-Length: +18\r\n"], 400, "Content-Length"),
        ([b"Content-Length: 0x12\r\n"], 400, "Content-Length"),
        ([b"Content-Length: \xd9\xa1\xd9\xa8\r\n"], 400, "Content-Length"),  # Arabic digits
        ([b"Content-Length: " + b"9" * 5000 + b"\r\n"], 413, "body over"),
        ([b"Content-Length: 70000\r\n"], 413, "body over"),
        ([b"Transfer-Encoding: chunked\r\n"], 411, "Content-Length"),
        ([b"Transfer-Encoding: chunked\r\n", b"Content-Length: 18\r\n"], 400, "Transfer"),
        ([b"Content-Length: 18\r\n", b"Transfer-Encoding: chunked\r\n"], 400, "Transfer"),
        ([b"Transfer-Encoding: chunked, gzip\r\n"], 400, "Transfer"),
        ([b"Transfer-Encoding: gzip\r\n", b"Transfer-Encoding: chunked\r\n"], 400, "Transfer"),
        ([b"Content-Length: 18\r\n", b"  folded\r\n"], 400, "obs-fold"),
        ([b" Content-Length: 18\r\n"], 400, "obs-fold"),
        ([b"Content-Length : 18\r\n"], 400, "whitespace before the colon"),
        ([b"Content-Length\t: 18\r\n"], 400, "whitespace before the colon"),
        ([b"X: a\rContent-Length: 5\r\n"], 400, "invalid byte"),  # a bare CR: two lines to http
        ([b"X: a\x00b\r\n"], 400, "invalid byte"),
        ([b"X: a\x7fb\r\n"], 400, "invalid byte"),
        ([b"X(y): a\r\n"], 400, "invalid header name"),
        ([b": a\r\n"], 400, "invalid header name"),
        ([b"no colon here\r\n"], 400, "without a colon"),
        ([b"From x\r\n"], 400, "without a colon"),  # an mbox line to email.parser
        ([b"Host: y\r\n"], 400, "Host"),  # with the Host below: two
    ],
)
def test_each_framing_fault_is_refused(lines: list[bytes], status: int, needle: str):
    got = refused([b"Host: x\r\n", *lines, b"\r\n"])
    assert got.status == status and needle in str(got), (lines, got)
    assert length([*GOOD_HEAD, b"\r\n"]) == 18  # the control, each time


def test_host_missing_headers_unended_and_http_1_0_transfer_encoding():
    assert "Host" in str(refused([b"Content-Length: 1\r\n", b"\r\n"]))
    assert "blank line" in str(refused([b"Host: x\r\n"]))  # the client stopped in its headers
    got = refused([b"Transfer-Encoding: chunked\r\n", b"\r\n"], "HTTP/1.0")
    assert got.status == 400
    assert length([b"Host: x\r\n", b"\r\n"]) == 0  # the control


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET / HTTP/1.1\r\n", 0),
        (b"PUT /vms/a?x=1 HTTP/1.0\n", 0),
        (b"GET  /vms HTTP/1.1\r\n", 400),
        (b"GET /vms  HTTP/1.1\r\n", 400),
        (b"GET\t/vms HTTP/1.1\r\n", 400),
        (b" GET /vms HTTP/1.1\r\n", 400),
        (b"GET /vms\r\n", 400),  # HTTP/0.9: answered without a status line by the library
        (b"GET /vms HTTP/1.1", 400),  # no line end: cut off
        (b"GET /vms HTTP/1.1\r\r\n", 400),
        (b"GET /v ms HTTP/1.1\r\n", 400),
        (b"GET /v\xffms HTTP/1.1\r\n", 400),
        (b"GET /v\x00 HTTP/1.1\r\n", 400),
        (b"G(T /vms HTTP/1.1\r\n", 400),
        (b"GET /vms http/1.1\r\n", 400),
        (b"GET /vms HTTP/1.1.1\r\n", 400),
        (b"GET /vms HTTP/2.0\r\n", 505),
        (b"GET /vms HTTP/0.9\r\n", 505),
    ],
)
def test_request_lines(line: bytes, status: int):
    if status == 0:
        framing.request_line(line)
        return
    with pytest.raises(Reply) as info:
        framing.request_line(line)
    assert info.value.status == status


# -- generated header blocks --------------------------------------------------------------
NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([\t\x20-\x7e\x80-\xff]*)\r?\n")
"""RFC 9112 5: field-name ":" OWS field-value OWS, written again here from the RFC"""
ODD = st.binary(max_size=4)


def mostly(good: list[bytes], bad: list[bytes]) -> st.SearchStrategy[bytes]:
    """A good piece about eleven times in twelve."""
    odd = st.sampled_from(bad) | ODD
    return st.integers(0, 11).flatmap(lambda i: odd if i == 0 else st.sampled_from(good))


names = mostly(
    [b"Content-Length", b"Transfer-Encoding", b"X-A", b"From", b"Accept", b"X-B"],
    [b"Host", b"", b" Host", b"X Y", b"X\x00", b"X(", b"\xc3\xa9"],
)
seps = mostly([b":", b": ", b":\t"], [b" :", b"\t:", b""])
values = mostly(
    [b"x", b"18", b"0", b"chunked", b"18, 18", b"+1", b"", b"a b ", b"\xe9"],
    [b"a\rb", b"a\x00", b"x\r\n folded", b"\x7f", b"\x85"],
)
ends = st.sampled_from([b"\r\n", b"\n"])
header_line = st.tuples(names, seps, values, ends).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(st.booleans(), st.lists(header_line, max_size=5))
def test_generated_heads_are_refused_or_read_exactly_as_sent(host: bool, lines: list[bytes]):
    lines = [*([b"Host: x\r\n"] if host else []), *lines, b"\r\n"]
    # what the library will see as lines: it splits at LF only, and stops at a blank line
    sent = [x + b"\n" for x in b"".join(lines).split(b"\n")[:-1]]
    sent = sent[: [x in (b"\r\n", b"\n") for x in sent].index(True) + 1]
    block = b"".join(sent)
    try:
        n = length(lines)
    except Reply as r:
        assert r.status in (400, 411, 413) and "\n" not in str(r)
        return
    assert sent[-1] in (b"\r\n", b"\n") and all(LINE.fullmatch(x) for x in sent[:-1]), sent
    rec = framing.Recorder(io.BytesIO(block))
    got = http.client.parse_headers(rec)  # type: ignore[arg-type]
    want = [LINE.fullmatch(x) for x in sent[:-1]]  # the library read exactly what was sent
    assert [(k.encode("latin-1"), v.encode("latin-1").strip(b" \t")) for k, v in got.items()] == [
        (m[1], m[2].strip(b" \t")) for m in want if m
    ]
    assert n == (int(got["Content-Length"]) if "Content-Length" in got else 0)


# -- JSON bodies ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"[" * 100000, "nested"),
        (b'{"a": ' + b"[" * 900 + b"]" * 900 + b"}", "nested"),
        (b'{"a": [[[[[[[[[["x"]]]]]]]]]]}', "nested"),
        (b'{"mtu": NaN}', "NaN"),
        (b'{"mtu": Infinity}', "Infinity"),
        (b'{"mtu": -Infinity}', "Infinity"),
        (b'{"mtu": 1e400}', "out of range"),
        (b'{"mtu": ' + b"9" * 5000 + b"}", "digits"),
        (b'{"dns": [], "dns": ["1.1.1.1"]}', 'key "dns" given twice'),
        (b'{"a": {"b": 1, "b": 2}}', 'key "b" given twice'),
        (b'{"tap": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b'{"tap": "\xff"}', "UTF-8"),
        (b"{not json", "invalid JSON"),
        (b'{"a": 1} {"b": 2}', "invalid JSON"),
        (b"[1]", "JSON object"),
        (b'"x"', "JSON object"),
        (b"null", "JSON object"),
    ],
)
def test_bad_json_is_one_400(raw: bytes, needle: str):
    with pytest.raises(Reply) as info:
        body.options(raw)
    assert info.value.status == 400 and needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_good_json_is_read():
    assert body.options(b"") == {} and body.options(b"  \r\n") == {}
    assert body.options(b'{"dns": ["192.0.2.53"], "mtu": 1500, "x": 1.5, "y": null}') == {
        "dns": ["192.0.2.53"],
        "mtu": 1500,
        "x": 1.5,
        "y": None,
    }
    deep = {"a": [[[[[["x"]]]]]]}  # 7 levels: within DEPTH
    assert body.options(json.dumps(deep).encode()) == deep
    assert body.options('{"name": "é€"}'.encode()) == {"name": "é€"}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=60)))
def test_any_body_is_an_object_or_one_400(raw: bytes):
    try:
        got = body.options(raw)
    except Reply as r:
        assert r.status == 400 and "\n" not in str(r)
        return
    assert isinstance(got, dict)
    json.dumps(got, allow_nan=False).encode("utf-8")  # plain, finite, encodable
