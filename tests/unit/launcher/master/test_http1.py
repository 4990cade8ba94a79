"""The clients' HTTP/1.1 response parser, fed the way a socket delivers bytes."""

from __future__ import annotations

import pytest

from launcher.errors import ResponseError
from launcher.master.http1 import ResponseParser, request

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"6\r\nhello\n\r\n" + b"7;ext=1\r\nworld!\n\r\n" + b"0\r\n\r\n"
)


@pytest.mark.parametrize("step", [1, 3, 7, len(CHUNKED)])
def test_a_chunked_body_comes_out_whatever_the_reads(step: int) -> None:
    parser = ResponseParser()
    body = b""
    for i in range(0, len(CHUNKED), step):
        body += b"".join(parser.feed(CHUNKED[i : i + step]))
    assert (parser.status, parser.complete, body) == (200, True, b"hello\nworld!\n")
    assert parser.headers["content-type"] == "application/x-ndjson"


def test_content_length_and_eof_bodies() -> None:
    parser = ResponseParser()
    assert parser.feed(b'HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n{"a"') == [b'{"a"']
    assert (parser.status, parser.complete) == (404, True)
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\n\r\nab") == [b"ab"]
    assert parser.feed(b"") == [] and parser.complete


def test_a_response_cut_short_or_not_http_is_an_error() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    with pytest.raises(ResponseError):
        parser.feed(b"")
    with pytest.raises(ResponseError):
        ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_a_request_carries_its_json_body_and_length() -> None:
    raw = request("POST", "/jobs/3/signal", {"signum": 15})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /jobs/3/signal HTTP/1.1\r\n")
    assert b"Content-Length: 14" in head and body == b'{"signum": 15}'
