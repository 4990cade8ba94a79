"""The object service tells its owner the body bytes it sent, per bearer token."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from cachefs.client import HttpSource
from cachefs.errors import SourceAuthError
from cachefs.service import INLINE_BYTES, base_url, make_app, secret_token_check, serve_app
from cachefs.store import Store
from tests.integration.cachefs.objects_server import SECRET

SMALL = b"a small library\n" * 10
LARGE = os.urandom(3 * INLINE_BYTES + 123)  # in a batch, streamed
HUGE = os.urandom(5 << 20)  # by GET, with sendfile
#: The longest batch frame header line: "<64 hex> <20 digits> get\n".
FRAME_HEADER_MAX = 90


def test_the_bytes_sent_are_counted_per_token_as_they_go_out(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    digests = [store.ingest_bytes(data)[0] for data in (SMALL, LARGE, HUGE)]
    sent: list[tuple[str, int]] = []

    async def fetch() -> int:
        app = make_app(store, secret_token_check(SECRET), on_sent=lambda t, n: sent.append((t, n)))
        runner = await serve_app(app, "127.0.0.1", 0)
        try:
            received = 0
            async for incoming in HttpSource(base_url(runner), SECRET).fetch(digests):
                async for chunk in incoming.chunks:
                    received += len(chunk)
            return received
        finally:
            await runner.cleanup()

    received = asyncio.run(fetch())
    objects = len(SMALL) + len(LARGE) + len(HUGE)
    assert received == objects
    assert {token for token, _ in sent} == {SECRET}
    total = sum(n for _, n in sent)
    # every body byte, the batch's three frame header lines included
    assert objects <= total <= objects + 3 * FRAME_HEADER_MAX


def test_nothing_is_counted_for_a_refused_request(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    digest, _ = store.ingest_bytes(SMALL)
    sent: list[tuple[str, int]] = []

    async def fetch() -> None:
        app = make_app(store, secret_token_check(SECRET), on_sent=lambda t, n: sent.append((t, n)))
        runner = await serve_app(app, "127.0.0.1", 0)
        try:
            source = HttpSource(base_url(runner), "wrong")
            with contextlib.suppress(SourceAuthError):  # 401
                async for _ in source.fetch([digest]):
                    pass
        finally:
            await runner.cleanup()

    asyncio.run(fetch())
    assert sent == []
