"""http.client over the master's Unix socket, against a fake server that answers
canned bytes, delivered in pieces the way a socket may deliver them."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from launcher.errors import ResponseError
from launcher.master.unixhttp import UnixHTTPConnection
from tests.unit.launcher.master.fakemaster import FakeMaster

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"6\r\nhello\n\r\n" + b"7;ext=1\r\nworld!\n\r\n" + b"0\r\n\r\n"
)


def _get(
    path: Path, method: str = "GET", target: str = "/", body: bytes = b""
) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request(method, target, body, {"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("step", [1, 3, 7, len(CHUNKED)])
def test_a_chunked_body_comes_out_whatever_the_writes(sock_dir: Path, step: int) -> None:
    master = FakeMaster(sock_dir / "m.sock", CHUNKED, step)
    try:
        conn = UnixHTTPConnection(master.path)
        conn.request("GET", "/jobs/1/events", b"", {})
        response = conn.getresponse()
        pieces = []
        while piece := response.read1(256 * 1024):
            pieces.append(piece)
        conn.close()
    finally:
        master.close()
    assert (response.status, b"".join(pieces)) == (200, b"hello\nworld!\n")
    assert response.headers["content-type"] == "application/x-ndjson"


def test_content_length_and_eof_bodies(sock_dir: Path) -> None:
    master = FakeMaster(
        sock_dir / "a.sock", b'HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n{"a"'
    )
    try:
        assert _get(master.path) == (404, b'{"a"')
    finally:
        master.close()
    master = FakeMaster(sock_dir / "b.sock", b"HTTP/1.0 200 OK\r\n\r\nab")
    try:
        assert _get(master.path) == (200, b"ab")
    finally:
        master.close()


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            "closed before the response ended",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", "closed before the response ended"),
        (b"", "closed before the response ended"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer: 'SSH-2.0-OpenSSH'"),
    ],
)
def test_a_response_cut_short_or_not_http_is_a_response_error(
    sock_dir: Path, answer: bytes, problem: str
) -> None:
    master = FakeMaster(sock_dir / "m.sock", answer)
    try:
        with pytest.raises(ResponseError, match=problem):
            _get(master.path)
    finally:
        master.close()


def test_a_request_carries_its_json_body_and_length(sock_dir: Path) -> None:
    master = FakeMaster(sock_dir / "m.sock", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    try:
        assert _get(master.path, "POST", "/jobs/3/signal", b'{"signum": 15}') == (200, b"{}")
    finally:
        master.close()
    head, _, body = master.request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /jobs/3/signal HTTP/1.1\r\n")
    assert b"Host: master" in head and b"Content-Length: 14" in head and body == b'{"signum": 15}'


def test_a_missing_or_refusing_socket_is_the_kernels_oserror(sock_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        UnixHTTPConnection(sock_dir / "nothing.sock").connect()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_dir / "stale.sock"))  # bound, never listening: refused
    try:
        with pytest.raises(ConnectionRefusedError):
            UnixHTTPConnection(sock_dir / "stale.sock").connect()
    finally:
        stale.close()


def test_shutdown_wakes_a_read_blocked_in_another_thread(sock_dir: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\na\n\r\n"
    master = FakeMaster(sock_dir / "m.sock", head, hold=True)
    conn = UnixHTTPConnection(master.path)
    conn.request("GET", "/", b"", {})
    response = conn.getresponse()
    assert response.read1(1024) == b"a\n"
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(response.read1(1024))
        except (OSError, ResponseError, ValueError) as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive()  # blocked: the fake master holds the connection open
    conn.shutdown()
    reader.join(5)
    try:
        assert not reader.is_alive() and outcome
        assert master.saw_close.wait(5)
    finally:
        conn.close()
        master.close()
