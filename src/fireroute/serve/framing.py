"""Where a request ends: HTTP/1.1 framing as RFC 9112 has it, over the standard library's
parser.

``http.server`` reads the request line and ``http.client.parse_headers`` (``email.parser``)
the header fields; both forgive what a server must not: a repeated ``Content-Length`` (the
first one wins), a bare CR (read as a line break, so one header line becomes two), a folded
line (joined to the one before), a line without a name or colon (it and every line after it
silently dropped), a request line of HTTP/0.9. A client, or a proxy in front of the daemon,
that reads such a request otherwise than the daemon does could have a body taken for the
next request, or the options of one request dropped. So the bytes the client sent are held
to the grammar first (:func:`request_line`, :func:`header_lines`), what the library made of
them must say the same (:func:`body_length`), and only then is the body's length decided, as
RFC 9112 section 6.3 decides it. A refusal is a :class:`Reply`: nothing of the request runs
and the connection is closed.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email.message import Message
    from io import BufferedIOBase


class Reply(Exception):
    """An answer other than 200, raised from anywhere in a handler."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


TCHAR = (string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~").encode()
"""the characters of a token (RFC 9110 5.6.2): a method, a header field's name"""
FIELD_VALUE = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
"""HTAB, SP, VCHAR and obs-text (RFC 9110 5.5): no other control byte, CR and LF included"""
REQUEST_LINE = re.compile(rb"([%s]+) ([\x21-\x7e]+) (HTTP/\d\.\d)\r?\n" % re.escape(TCHAR))
"""method SP request-target SP HTTP-version CRLF (RFC 9112 3), one SP each"""
VERSIONS = ("HTTP/1.0", "HTTP/1.1")


def bad(message: str) -> Reply:
    return Reply(400, "BadRequest", message)


def request_line(raw: bytes) -> None:
    """Refuse a request line that is not ``METHOD SP TARGET SP HTTP/1.x CRLF``: the library
    splits at any run of whitespace and takes two words as HTTP/0.9 (answered without a
    status line)."""
    m = REQUEST_LINE.fullmatch(raw)
    if m is None:
        raise bad("invalid request line: use METHOD SP /PATH SP HTTP/1.1 CRLF")
    if m[3].decode() not in VERSIONS:
        raise Reply(505, "VersionNotSupported", f"{m[3].decode()} is not served: use HTTP/1.1")


class Recorder:
    """The connection's reader, keeping every line read through it: the header block as the
    client sent it, while the library parses it (``parse_headers`` reads by ``readline``)."""

    def __init__(self, f: BufferedIOBase) -> None:
        self.f = f
        self.lines: list[bytes] = []

    def readline(self, limit: int = -1) -> bytes:
        line = self.f.readline(limit)
        self.lines.append(line)
        return line


def header_lines(lines: list[bytes]) -> None:
    """Refuse header lines that are not ``NAME ":" OWS VALUE OWS`` (RFC 9112 5), ending in a
    blank line: no line folded onto the one before (obs-fold), no whitespace before a colon, a
    name of token characters, a value of field characters (no bare CR, no NUL)."""
    if not lines or lines[-1] not in (b"\r\n", b"\n"):
        raise bad("the header fields ended before their blank line")
    for raw in lines[:-1]:
        line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if line[:1] in (b" ", b"\t"):
            raise bad("a header line folded onto the one before (obs-fold; RFC 9112 5.2)")
        name, colon, value = line.partition(b":")
        shown = name[:40].decode("latin-1")
        if not colon:
            raise bad(f"a header line without a colon: {shown!r}")
        if name != name.rstrip(b" \t"):
            raise bad(f"whitespace before the colon of header {shown.strip()!r} (RFC 9112 5.1)")
        if not name or name.translate(None, TCHAR):
            raise bad(f"invalid header name {shown!r}")
        if value.translate(None, FIELD_VALUE):
            raise bad(f"invalid byte in the value of header {shown!r}")


def body_length(lines: list[bytes], headers: Message, version: str, limit: int) -> int:
    """The body's length, from the header lines as sent and as the library parsed them
    (RFC 9112 6.3): one ``Content-Length`` of digits, or none (no body); ``Transfer-Encoding``
    is refused (with a ``Content-Length``, after ``chunked``, or on HTTP/1.0: 400; a chunked
    body: 411, send its length). An HTTP/1.1 request names exactly one ``Host`` (3.2). Above
    ``limit`` bytes: 413."""
    header_lines(lines)
    if len(headers) != len(lines) - 1 or headers.defects:  # (cannot be, once the lines pass)
        raise bad("the header fields could not be read as sent")
    hosts = headers.get_all("Host") or []
    if len(hosts) > 1 or (version == "HTTP/1.1" and not hosts):
        raise bad("an HTTP/1.1 request has exactly one Host header (RFC 9112 3.2)")
    lengths = headers.get_all("Content-Length") or []
    codings = headers.get_all("Transfer-Encoding") or []
    if codings:
        last = codings[-1].rpartition(",")[2].strip().lower()
        if lengths or last != "chunked" or version != "HTTP/1.1" or len(codings) > 1:
            raise bad(
                "Transfer-Encoding with Content-Length, repeated, not ending in chunked "
                "or on HTTP/1.0: the body's end is unknown (RFC 9112 6.3)"
            )
        raise Reply(411, "LengthRequired", "send the body with a Content-Length")
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise bad("Content-Length given more than once (RFC 9112 6.3)")
    length = lengths[0].strip(" \t")
    if not (length.isascii() and length.isdigit()):
        raise bad(f"invalid Content-Length {length[:40]!r}")
    if len(length) > 12 or int(length) > limit:
        raise Reply(413, "TooLarge", f"body over {limit} bytes")
    return int(length)
