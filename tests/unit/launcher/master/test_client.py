"""The master's clients against a fake master: what they send, what they make of
the answer, and the MasterError that names the socket when it goes wrong."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path

import pytest

from launcher.errors import MasterError
from launcher.master.client import BlockingClient, MasterClient
from launcher.wire import Done, Message, Output, encode
from tests.unit.launcher.master.fakemaster import FakeMaster

OUTPUT = Output.of(7, 0, "stdout", b"hi\n")
DONE = Done(7, 0, None)


def _chunked(*pieces: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)


def _json(status: int, doc: object) -> bytes:
    body = json.dumps(doc).encode()
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


def _line(*messages: Message) -> bytes:
    return "".join(encode(m) + "\n" for m in messages).encode()


def test_a_submission_sends_its_fields_and_returns_the_job(sock_dir: Path) -> None:
    master = FakeMaster(sock_dir / "m.sock", _json(200, {"job": 12}))
    try:
        job = BlockingClient(master.path).submit(
            argv=["/bin/true"], env={}, cwd="/tmp", nodes=1, tasks=2, manifest={}, late="fail"
        )
    finally:
        master.close()
    head, _, body = master.request.partition(b"\r\n\r\n")
    assert job == 12 and head.startswith(b"POST /jobs HTTP/1.1\r\n")
    assert b"Content-Type: application/json" in head and b"Connection: close" in head
    assert json.loads(body) == {
        "argv": ["/bin/true"],
        "env": {},
        "cwd": "/tmp",
        "nodes": 1,
        "tasks": 2,
        "manifest": {},
        "batch": False,
        "late": "fail",
    }


def test_a_batch_submission_sends_the_output_patterns(sock_dir: Path) -> None:
    master = FakeMaster(sock_dir / "m.sock", _json(200, {"job": 3}))
    try:
        job = asyncio.run(
            MasterClient(master.path).submit(
                argv=["a"], env={}, cwd="/", nodes=1, tasks=1, manifest={}, batch=True, output="o"
            )
        )
    finally:
        master.close()
    body = json.loads(master.request.partition(b"\r\n\r\n")[2])
    assert job == 3 and (body["output"], body["error"], body["label"]) == ("o", None, False)


def test_a_refusal_carries_the_masters_message_and_status(sock_dir: Path) -> None:
    master = FakeMaster(sock_dir / "m.sock", _json(403, {"error": "not your job"}))
    try:
        with pytest.raises(MasterError) as caught:
            BlockingClient(master.path).signal(7, 15)
    finally:
        master.close()
    assert caught.value.status == 403
    assert str(caught.value) == f"master at {master.path}: not your job"


def test_no_master_says_what_to_run(sock_dir: Path) -> None:
    with pytest.raises(MasterError) as caught:
        asyncio.run(MasterClient(sock_dir / "nothing.sock").nodes())
    assert caught.value.status is None
    assert "cannot connect (No such file or directory)" in str(caught.value)
    assert "beoctl cluster up" in str(caught.value)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_dir / "stale.sock"))
    try:
        with pytest.raises(MasterError, match=r"cannot connect \(Connection refused\)"):
            BlockingClient(sock_dir / "stale.sock").ps()
    finally:
        stale.close()


def test_an_answer_that_is_not_http_is_a_failed_connection(sock_dir: Path) -> None:
    master = FakeMaster(sock_dir / "m.sock", b"SSH-2.0-OpenSSH\r\n\r\n")
    try:
        with pytest.raises(MasterError) as caught:
            BlockingClient(master.path).jobs()
    finally:
        master.close()
    assert "the connection failed (not an HTTP answer: 'SSH-2.0-OpenSSH')" in str(caught.value)


@pytest.mark.parametrize("step", [1, 5, 0])
def test_a_stream_ends_with_the_done_whatever_the_reads(sock_dir: Path, step: int) -> None:
    # A keepalive line, then the output and the Done; what follows the Done is not read.
    body = _chunked(b"\n", _line(OUTPUT, DONE), _line(OUTPUT))
    master = FakeMaster(sock_dir / "m.sock", body, step)
    try:
        seen = list(BlockingClient(master.path).stream(7))
    finally:
        master.close()
    assert seen == [OUTPUT, DONE]
    assert master.request.startswith(b"GET /jobs/7/events HTTP/1.1\r\n")


def test_a_stream_cut_before_the_done_says_so(sock_dir: Path) -> None:
    master = FakeMaster(sock_dir / "m.sock", _chunked(_line(OUTPUT)))
    try:
        with pytest.raises(MasterError, match="the stream of job 7 ended before the job did"):
            list(BlockingClient(master.path).stream(7))
    finally:
        master.close()


def test_watching_a_job_the_master_refuses_names_it(sock_dir: Path) -> None:
    master = FakeMaster(sock_dir / "m.sock", _json(404, {"error": "no job 7"}))

    async def watch() -> None:
        async for _message in MasterClient(master.path).stream(7):
            pass

    try:
        with pytest.raises(MasterError) as caught:
            asyncio.run(watch())
    finally:
        master.close()
    assert caught.value.status == 404 and "cannot watch job 7: no job 7" in str(caught.value)


def test_leaving_an_async_stream_early_closes_its_connection(sock_dir: Path) -> None:
    # The master holds the stream open: the watcher stops after the first message,
    # while its worker thread may wait for more; leaving must not wait for the master.
    master = FakeMaster(sock_dir / "m.sock", _chunked(_line(OUTPUT)), hold=True)

    async def first() -> object:
        stream = MasterClient(master.path).stream(7)
        message = await anext(stream)
        reading = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)
        assert not reading.done()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await stream.aclose()
        return message

    start = time.monotonic()
    try:
        assert asyncio.run(first()) == OUTPUT
        assert master.saw_close.wait(5)
    finally:
        master.close()
    assert time.monotonic() - start < 5
