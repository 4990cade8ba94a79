"""HttpSource against the real object service on 127.0.0.1, and against a
misbehaving server for the framing checks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cachefs.client import HttpSource
from cachefs.errors import SourceAuthError, SourceProtocolError, SourceUnreachableError
from cachefs.service import BATCH_CONTENT_TYPE, base_url, serve_app
from cachefs.source import Incoming, ObjectSource
from cachefs.store import Store
from tests.integration.cachefs.objects_server import SECRET, running


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def collect(source: ObjectSource, wanted: list[str]) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    async for incoming in source.fetch(wanted):
        assert incoming.sha256 not in got
        data = b"".join([chunk async for chunk in incoming.chunks])
        assert len(data) == incoming.size
        got[incoming.sha256] = data
    return got


@pytest.fixture
def libraries(tmp_path: Path) -> tuple[Store, dict[str, bytes]]:
    """300 small 'libraries' of 1-20 KiB."""
    store = Store(tmp_path / "store")
    blobs = {}
    for i in range(300):
        data = f"lib{i}".encode() + os.urandom(1024 * (1 + i % 20))
        digest, _ = store.ingest_bytes(data)
        blobs[digest] = data
    return store, blobs


def test_300_small_objects_in_one_post(libraries: tuple[Store, dict[str, bytes]]) -> None:
    store, blobs = libraries
    unknown = sha(b"nobody has this")

    async def main() -> None:
        async with running(store) as served:
            source = HttpSource(served.url, SECRET)
            got = await collect(source, [*blobs, unknown])
            assert got == blobs
            assert served.seen == [("POST", "/objects/batch")]

    run(main())


def test_large_objects_by_get_small_by_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    small = {sha(d): d for d in (b"s1", b"s2" * 100)}
    large = {sha(d): d for d in (os.urandom(3 << 20), os.urandom(5000), os.urandom(70_000))}
    for data in [*small.values(), *large.values()]:
        store.ingest_bytes(data)
    gone = sha(b"missing")

    async def main() -> None:
        async with running(store) as served:
            source = HttpSource(served.url, SECRET, small_limit=4096, connections=2)
            got = await collect(source, [*large, gone, *small])
            assert got == {**small, **large}
            posts = [p for m, p in served.seen if m == "POST"]
            gets = sorted(p for m, p in served.seen if m == "GET")
            assert posts == ["/objects/batch"]
            assert gets == sorted(f"/objects/{d}" for d in large)

    run(main())


def test_batches_split_at_the_limit(libraries: tuple[Store, dict[str, bytes]]) -> None:
    store, blobs = libraries

    async def main() -> None:
        async with running(store) as served:
            source = HttpSource(served.url, SECRET, batch_limit=128)
            assert await collect(source, list(blobs)) == blobs
            assert served.seen == [("POST", "/objects/batch")] * 3  # 128 + 128 + 44

    run(main())


def test_partly_read_objects_do_not_shift_the_frames(
    libraries: tuple[Store, dict[str, bytes]],
) -> None:
    """The cache may give up on an object mid-way; the next one still starts right."""
    store, blobs = libraries

    async def main() -> None:
        async with running(store) as served:
            seen = 0
            async for incoming in HttpSource(served.url, SECRET).fetch(list(blobs)):
                first = await anext(incoming.chunks)
                assert blobs[incoming.sha256].startswith(first)
                seen += 1
            assert seen == len(blobs)

    run(main())


def test_partly_read_get_objects_do_not_disturb_the_rest(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    blobs = {}
    for i in range(12):
        data = os.urandom(300_000 + i)  # two chunks or more
        blobs[store.ingest_bytes(data)[0]] = data

    async def main() -> None:
        async with running(store) as served:
            source = HttpSource(served.url, SECRET, small_limit=0, connections=3)
            got: dict[str, bytes] = {}
            async for incoming in source.fetch(list(blobs)):
                if len(got) % 2:  # every other one abandoned after its first chunk
                    first = await anext(incoming.chunks)
                    assert blobs[incoming.sha256].startswith(first)
                    got[incoming.sha256] = blobs[incoming.sha256]
                else:
                    got[incoming.sha256] = b"".join([c async for c in incoming.chunks])
            assert got == blobs
            assert sum(1 for m, _ in served.seen if m == "GET") == len(blobs)

    run(main())


def test_caller_session_is_used_and_left_open(
    libraries: tuple[Store, dict[str, bytes]],
) -> None:
    store, blobs = libraries
    some = list(blobs)[:3]

    async def main() -> None:
        async with running(store) as served, aiohttp.ClientSession() as session:
            source = HttpSource(served.url, SECRET, session=session, kind="peer")
            assert await collect(source, some) == {d: blobs[d] for d in some}
            assert not session.closed
            assert source.kind == "peer"
            assert source.label == served.url

    run(main())


def test_bad_token_is_source_auth_error(libraries: tuple[Store, dict[str, bytes]]) -> None:
    store, blobs = libraries

    async def main() -> None:
        async with running(store) as served:
            with pytest.raises(SourceAuthError) as info:
                await collect(HttpSource(served.url, "wrong"), list(blobs)[:1])
            assert info.value.source == served.url
            assert "token" in str(info.value)

    run(main())


def test_nothing_listening_is_source_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        url = f"http://127.0.0.1:{port}"

        async def main() -> None:
            with pytest.raises(SourceUnreachableError) as info:
                await collect(HttpSource(url, SECRET), [sha(b"x")])
            assert info.value.source == url
            assert "object service runs" in str(info.value)

        run(main())


# --- a server that breaks the protocol ---------------------------------------------

A, B = sha(b"a" * 10), sha(b"b" * 10)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def framing_server(
    body: bytes, *, content_type: str = BATCH_CONTENT_TYPE, cut: bool = False
) -> AsyncIterator[str]:
    async def batch(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        await resp.write(body)
        if cut:
            assert request.transport is not None
            request.transport.close()  # no final chunk
            return resp
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/objects/batch", batch)
    runner = await serve_app(app, "127.0.0.1", 0)
    try:
        yield base_url(runner)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("body", "kwargs", "message"),
    [
        (f"{B} 10\n".encode() + b"b" * 10, {}, "came where object"),  # wrong order
        (f"{A} 10\n".encode() + b"a" * 4, {}, "short of object"),  # short body
        (f"{A} 10\n".encode() + b"a" * 4, {"cut": True}, "cut short"),
        (f"{A} 10\n".encode() + b"a" * 10 + f"{B} -\n".encode() + b"junk", {}, "follow the last"),
        (f"{A} ten\n".encode(), {}, "malformed"),
        (f"{A} 10 maybe\n".encode(), {}, "malformed"),
        (f"{A}".encode(), {}, "ended"),
        (b"", {}, "ended"),
        (b"x" * 300_000, {}, "too long"),
        (f"{A} -\n{B} -\n".encode(), {"content_type": "text/html"}, "not a batch"),
    ],
    ids=[
        "order",
        "short",
        "cut",
        "trailing",
        "size",
        "marker",
        "no-newline",
        "empty",
        "huge-line",
        "content-type",
    ],
)
def test_misframed_batch_is_source_protocol_error(
    body: bytes, kwargs: dict[str, Any], message: str
) -> None:
    async def main() -> None:
        server = framing_server(body, **kwargs)
        url = await anext(server)
        try:
            with pytest.raises(SourceProtocolError, match=message) as info:
                await collect(HttpSource(url, SECRET), [A, B])
            assert info.value.source == url
        finally:
            await server.aclose()

    run(main())


def test_unreachable_mid_stream_never_yields_a_short_object() -> None:
    """Every byte counted: what was yielded before the error was whole."""

    async def main() -> None:
        server = framing_server(
            f"{A} 10\n".encode() + b"a" * 10 + f"{B} 10\n".encode() + b"b", cut=True
        )
        url = await anext(server)
        whole: list[Incoming] = []
        try:
            with pytest.raises(SourceProtocolError):
                async for incoming in HttpSource(url, SECRET).fetch([A, B]):
                    data = b"".join([c async for c in incoming.chunks])
                    assert len(data) == incoming.size
                    whole.append(incoming)
        finally:
            await server.aclose()
        assert [i.sha256 for i in whole] == [A]

    run(main())
