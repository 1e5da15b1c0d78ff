"""Generated HTTP requests against a running ``fireroute serve`` in a namespace: random
methods, paths, header sets (duplicates and conflicts included), bodies (nesting, wrong types,
duplicate keys, non-numbers, bytes that are not JSON), one or two to a connection. Every one
is answered with well-formed HTTP/1.1 responses of a status below 500 (or one documented:
408, 501, 503, 505), the daemon stays up, never logs a traceback, and the state file and the
kernel agree afterwards."""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute import request
from fireroute.model import check_vm_name
from tests.conftest import Host
from tests.kernel.test_serve import Daemon, check_clean

pytestmark = pytest.mark.privileged

ALLOWED_5XX = {501, 503, 505}  # (408 is below 500)
NAMES = ["f1", "f2", "f3"]


def mostly(good: st.SearchStrategy, odd: st.SearchStrategy, one_in: int = 8) -> st.SearchStrategy:
    """``odd`` about once in ``one_in`` draws: most requests get far enough to be served."""
    return st.integers(1, one_in).flatmap(lambda i: odd if i == 1 else good)


methods = mostly(
    st.sampled_from(["GET", "PUT", "PUT", "DELETE", "POST"]),
    st.sampled_from(["HEAD", "PATCH", "OPTIONS", "get", "G(T", "", "PUT\t", "DELETE "]),
)
vm_paths = st.builds(
    lambda n, sub: f"/vms/{n}{sub}",
    mostly(st.sampled_from(NAMES), st.sampled_from(["bad%20name", "..", "a" * 70, "é", ""])),
    mostly(st.sampled_from(["", "", "/policy"]), st.sampled_from(["/attach", "/x", "?q=1", "/"])),
)
paths = mostly(
    vm_paths | st.sampled_from(["/vms", "/healthz", "/metrics", "/stats", "/check"]),
    st.sampled_from(["/", "*", "//vms", "/vms/"])
    | st.text(alphabet="/abvms%?#. \t\x00é", max_size=12),
)
GOOD = {  # plausible values of a tenant's options
    "guest_iface": st.sampled_from(["eth0", "eth1"]),
    "iface_id": st.sampled_from(["eth0", "net1"]),
    "dns": st.sampled_from([[], ["192.0.2.53"], ["192.0.2.53", "198.51.100.53"]]),
    "egress": st.sampled_from(["internet", "public", "none"]),
    "deny_out": st.sampled_from([[], ["10.0.0.0/8"], ["192.0.2.0/24"]]),
}
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(["none", "public", "192.0.2.53", "10.0.0.0/8", "eth1", "", "\x00"]),
    st.text(max_size=8),
)
odd_values = st.recursive(scalars, lambda k: st.lists(k, max_size=3), max_leaves=6)
odd_fields = st.sampled_from([*request.FIELDS, "socket", "frob", ""])
good_objects = st.fixed_dictionaries({}, optional=GOOD)
odd_objects = st.dictionaries(odd_fields, odd_values, max_size=4)
objects = mostly(good_objects, odd_objects, 4).map(lambda d: json.dumps(d).encode())
bodies = mostly(
    objects,
    st.one_of(
        st.integers(1, 3000).map(lambda n: b'{"dns": ' + b"[" * n + b"]" * n + b"}"),
        st.sampled_from(
            [
                b'{"dns": NaN}',
                b'{"egress": "none", "egress": "public"}',
                b'{"dns": [1e999]}',
                b'{"egress": "\\udc80"}',
                b"[1]",
                b"{",
                b"\xff",
            ]
        ),
        st.binary(max_size=20),
    ),
    6,
)
extra = st.sampled_from(
    [
        b"Content-Length: 3\r\n",
        b"Content-Length: 0\r\n",
        b"Content-Length: x\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Host: y\r\n",
        b"Connection: close\r\n",
        b"Connection: keep-alive\r\n",
        b"Expect: 100-continue\r\n",
        b"X-A: a\r\n b\r\n",
        b"X-A : b\r\n",
        b"X-A: \x00\r\n",
        b"X-A: a\rb\r\n",
        b"junk\r\n",
        b"Content-Type: application/json\r\n",
    ]
)
extras = mostly(st.just([]), st.lists(extra, min_size=1, max_size=3), 5)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    method, path = draw(methods), draw(paths)
    body = draw(bodies) if method in ("PUT", "POST") or draw(st.integers(0, 7)) == 0 else b""
    version = draw(
        mostly(st.just("HTTP/1.1"), st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "]))
    )
    head = [b"Host: x\r\n"] if draw(st.integers(0, 12)) else []
    if body or draw(st.booleans()):
        head.append(b"Content-Length: %d\r\n" % len(body))
    head += draw(extras)
    head = draw(st.permutations(head))
    line = f"{method} {path} {version}\r\n".encode("utf-8", "surrogateescape")
    if not re.fullmatch(rb"HEAD [\x21-\x7e]+ HTTP/1\.[01]\r\n", line):
        method = "other"  # only a HEAD the daemon could read as one is answered without content
    return method, line + b"".join(head) + b"\r\n" + body


def responses(data: bytes, methods_sent: list[str]) -> list[int]:
    """Parse what the daemon sent: one or more whole HTTP/1.1 responses and nothing else."""
    statuses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:300]
        lines = head.split(b"\r\n")
        version, code, _reason = lines[0].decode("ascii").split(" ", 2)
        assert version == "HTTP/1.1" and code.isdigit() and len(code) == 3, lines[0]
        fields = {}
        for x in lines[1:]:
            name, colon, value = x.decode("latin-1").partition(":")
            assert colon and name and name == name.strip(), x
            fields[name.lower()] = value.strip()
        status = int(code)
        if status == 100:  # an interim answer: the final one follows
            data = rest
            continue
        n = int(fields["content-length"])
        method = methods_sent[len(statuses)] if len(statuses) < len(methods_sent) else ""
        if method == "HEAD":
            n = 0
        content, data = rest[:n], rest[n:]
        assert len(content) == n, (n, content)
        if n and fields["content-type"] == "application/json":
            got = json.loads(content)
            if status != 200:
                assert set(got["error"]) == {"kind", "message"}, got
                assert "\n" not in got["error"]["message"] and "Traceback" not in content.decode()
        statuses.append(status)
    return statuses


@pytest.fixture
def daemon(host: Host, tmp_path: Path) -> Iterator[Daemon]:
    config = {"client_timeout": 2, "request_timeout": 4, "max_body": 65536}
    d = Daemon(host, tmp_path, config=config)
    try:
        yield d
    finally:
        d.stop()


def send(d: Daemon, sent: list[tuple[str, bytes]]) -> list[int]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(15)
    s.connect(d.sock)
    try:
        s.sendall(b"".join(data for _, data in sent))
        s.shutdown(socket.SHUT_WR)  # all sent: a short body ends here, not at a timeout
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    finally:
        s.close()
    return responses(b"".join(chunks), [m for m, _ in sent])


def test_generated_requests_are_answered_well(daemon: Daemon, host: Host):
    seen: Counter[int] = Counter()

    @settings(max_examples=400, deadline=None, database=None)
    @given(st.lists(requests(), min_size=1, max_size=2))
    def one(sent: list[tuple[str, bytes]]) -> None:
        statuses = send(daemon, sent)
        seen.update(statuses)
        assert 1 <= len(statuses) <= len(sent), statuses
        assert all(x < 500 or x in ALLOWED_5XX for x in statuses), (statuses, sent)
        assert daemon.proc.poll() is None

    one()
    print(sorted(seen.items()))
    assert seen[200] >= 10 and seen[400] >= 10 and seen[403] + seen[404] >= 10, seen  # both ways
    c = daemon.client()  # then: the daemon is up, and the state file and kernel agree
    assert c.call("GET", "/healthz") == (200, {"ok": True})
    status, vms = c.call("GET", "/vms")
    assert status == 200, vms
    for v in vms:  # type: ignore[union-attr]
        # a generated path may name other VMs than NAMES ("/vms//policy", "/vms/ab"): each
        # VM made is one a client may name
        check_vm_name(v["name"])
    check_clean(host)
    text = daemon.log.read_text()
    assert "Traceback" not in text and "connection-error" not in text, text[-2000:]
    assert all(x.get("status", 200) < 500 or x["status"] in ALLOWED_5XX for x in daemon.lines())
