"""The object service over real HTTP on 127.0.0.1: auth, GET/HEAD, Range, ETag,
traversal, and the batch framing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest

from cachefs.errors import ServiceConfigError
from cachefs.service import BATCH_CONTENT_TYPE, INLINE_BYTES, MAX_BATCH, secret_token_check
from cachefs.store import Store
from tests.integration.cachefs.objects_server import SECRET, bearer, raw, running

SMALL = b"a small library\n" * 10  # 160 bytes
LARGE = os.urandom(3 * INLINE_BYTES + 123)  # streamed in chunks within a batch
HUGE = os.urandom(5 << 20)
UNKNOWN = hashlib.sha256(b"not stored").hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class CountingStore(Store):
    """A real store that records which digests were opened."""

    opened: list[str]

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened = []

    def open(self, sha256: str) -> BinaryIO:
        self.opened.append(sha256)
        return super().open(sha256)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    s = CountingStore(tmp_path / "store")
    for data in (SMALL, LARGE, HUGE, b""):
        s.ingest_bytes(data)
    return s


# --- authentication ------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {SECRET}x"},
        {"Authorization": SECRET},
    ],
    ids=["none", "wrong", "basic", "empty", "longer", "no-scheme"],
)
@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("GET", f"/objects/{sha(SMALL)}", b""),
        ("HEAD", f"/objects/{sha(SMALL)}", b""),
        ("GET", "/objects/../../etc/passwd", b""),
        ("GET", "/nothing/here", b""),
        ("POST", "/objects/batch", json.dumps({"objects": [sha(SMALL)]}).encode()),
    ],
    ids=["get", "head", "traversal", "unknown-route", "batch"],
)
def test_without_valid_token_401_and_no_body_bytes(
    store: Store, headers: dict[str, str], method: str, target: str, body: bytes
) -> None:
    async def main() -> None:
        async with running(store) as served:
            resp = await raw(served.url, method, target, headers, body)
        assert resp.status == 401
        assert resp.body == b""
        assert resp.headers.get("content-length", "0") == "0"
        assert resp.headers["www-authenticate"].startswith("Bearer")

    run(main())
    assert store.opened == []  # type: ignore[attr-defined]


def test_secret_token_check() -> None:
    check = secret_token_check("abc")
    assert check("abc")
    assert not check("abd")
    assert not check("")
    assert not check("abcd")
    with pytest.raises(ServiceConfigError, match="empty"):
        secret_token_check("")


# --- GET and HEAD --------------------------------------------------------------


def test_get_whole_object(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            for data in (SMALL, HUGE, b""):
                resp = await raw(served.url, "GET", f"/objects/{sha(data)}", bearer())
                assert resp.status == 200
                assert resp.body == data
                assert resp.headers["etag"] == f'"{sha(data)}"'
                assert resp.headers["content-length"] == str(len(data))
                assert resp.headers["accept-ranges"] == "bytes"

    run(main())


def test_head_has_headers_and_no_body(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            resp = await raw(served.url, "HEAD", f"/objects/{sha(HUGE)}", bearer())
        assert resp.status == 200
        assert resp.body == b""
        assert resp.headers["content-length"] == str(len(HUGE))
        assert resp.headers["etag"] == f'"{sha(HUGE)}"'

    run(main())


def test_unknown_object_404(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            for method in ("GET", "HEAD"):
                resp = await raw(served.url, method, f"/objects/{UNKNOWN}", bearer())
                assert resp.status == 404

    run(main())


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-19", 10, 20),
        ("bytes=4194000-", 4194000, len(HUGE)),
        ("bytes=-100", len(HUGE) - 100, len(HUGE)),
        ("bytes=1000-99999999", 1000, len(HUGE)),
        ("bytes=-99999999", 0, len(HUGE)),
    ],
)
def test_range_206_with_the_right_bytes(store: Store, header: str, start: int, stop: int) -> None:
    async def main() -> None:
        async with running(store) as served:
            resp = await raw(
                served.url, "GET", f"/objects/{sha(HUGE)}", {**bearer(), "Range": header}
            )
        assert resp.status == 206
        assert resp.body == HUGE[start:stop]
        assert resp.headers["content-length"] == str(stop - start)
        assert resp.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(HUGE)}"
        assert resp.headers["etag"] == f'"{sha(HUGE)}"'

    run(main())


@pytest.mark.parametrize("header", [f"bytes={len(SMALL)}-", "bytes=99999-", "bytes=-0"])
def test_unsatisfiable_range_416(store: Store, header: str) -> None:
    async def main() -> None:
        async with running(store) as served:
            resp = await raw(
                served.url, "GET", f"/objects/{sha(SMALL)}", {**bearer(), "Range": header}
            )
        assert resp.status == 416
        assert resp.headers["content-range"] == f"bytes */{len(SMALL)}"

    run(main())


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "lines=1-2", "bytes=9-3"])
def test_range_not_served_sends_whole_object(store: Store, header: str) -> None:
    async def main() -> None:
        async with running(store) as served:
            resp = await raw(
                served.url, "GET", f"/objects/{sha(SMALL)}", {**bearer(), "Range": header}
            )
        assert resp.status == 200
        assert resp.body == SMALL

    run(main())


def test_if_range_with_other_etag_sends_whole_object(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            url, target = served.url, f"/objects/{sha(SMALL)}"
            other = await raw(
                url, "GET", target, {**bearer(), "Range": "bytes=0-3", "If-Range": '"x"'}
            )
            same = await raw(
                url,
                "GET",
                target,
                {**bearer(), "Range": "bytes=0-3", "If-Range": f'"{sha(SMALL)}"'},
            )
        assert (other.status, other.body) == (200, SMALL)
        assert (same.status, same.body) == (206, SMALL[:4])

    run(main())


def test_if_none_match_304(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            target = f"/objects/{sha(SMALL)}"
            hit = await raw(
                served.url, "GET", target, {**bearer(), "If-None-Match": f'"{sha(SMALL)}"'}
            )
            star = await raw(served.url, "GET", target, {**bearer(), "If-None-Match": "*"})
            miss = await raw(served.url, "GET", target, {**bearer(), "If-None-Match": '"other"'})
        assert hit.status == 304
        assert hit.body == b""
        assert hit.headers["etag"] == f'"{sha(SMALL)}"'
        assert star.status == 304
        assert (miss.status, miss.body) == (200, SMALL)

    run(main())


# --- names that are not digests ----------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/objects/../../etc/passwd",
        "/objects/%2e%2e/%2e%2e/etc/passwd",
        "/objects/..%2f..%2fetc%2fpasswd",
        "/objects/%2Fetc%2Fpasswd",
        "/objects//etc/passwd",
        "//etc/passwd",
        "/etc/passwd",
        "/objects/../tmp",
        f"/objects/{sha(SMALL)[:2]}/{sha(SMALL)}",
        f"/objects/{sha(SMALL).upper()}",
        f"/objects/{sha(SMALL)}/",
        f"/objects/{sha(SMALL)}%00",
        f"/objects/{sha(SMALL)[:63]}",
        f"/objects/{sha(SMALL)}0",
        "http://127.0.0.1/etc/passwd",
    ],
)
def test_path_that_is_not_a_digest_404_without_touching_the_store(
    store: Store, target: str
) -> None:
    async def main() -> None:
        async with running(store) as served:
            resp = await raw(served.url, "GET", target, bearer())
        assert resp.status == 404
        assert b"root:" not in resp.body
        assert SMALL not in resp.body

    run(main())
    assert store.opened == []  # type: ignore[attr-defined]


# --- POST /objects/batch -----------------------------------------------------------


async def post_batch(url: str, doc: object) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/objects/batch", json=doc, headers=bearer()) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


def parse_frames(body: bytes) -> list[tuple[str, str, bytes]]:
    """(digest, size field, bytes) per frame; strict: fails on any leftover."""
    frames = []
    while body:
        line, sep, body = body.partition(b"\n")
        assert sep
        digest, *rest = line.decode().split(" ")
        if rest == ["-"] or (len(rest) == 2 and rest[1] == "get"):
            frames.append((digest, " ".join(rest), b""))
            continue
        size = int(rest[0])
        assert len(body) >= size
        frames.append((digest, rest[0], body[:size]))
        body = body[size:]
    return frames


def test_batch_frames_in_request_order(store: Store) -> None:
    wanted = [sha(SMALL), UNKNOWN, sha(LARGE), sha(b""), sha(SMALL), sha(HUGE)]

    async def main() -> None:
        async with running(store) as served:
            status, ctype, body = await post_batch(served.url, {"objects": wanted})
        assert status == 200
        assert ctype == BATCH_CONTENT_TYPE
        assert parse_frames(body) == [
            (sha(SMALL), str(len(SMALL)), SMALL),
            (UNKNOWN, "-", b""),
            (sha(LARGE), str(len(LARGE)), LARGE),
            (sha(b""), "0", b""),
            (sha(SMALL), str(len(SMALL)), SMALL),
            (sha(HUGE), str(len(HUGE)), HUGE),
        ]
        # the exact bytes of the first two frames
        assert body.startswith(
            f"{sha(SMALL)} {len(SMALL)}\n".encode() + SMALL + f"{UNKNOWN} -\n".encode()
        )

    run(main())


def test_batch_max_size_answers_large_objects_with_their_size(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            doc = {"objects": [sha(HUGE), sha(SMALL)], "max_size": len(SMALL)}
            status, _, body = await post_batch(served.url, doc)
        assert status == 200
        assert body == (
            f"{sha(HUGE)} {len(HUGE)} get\n{sha(SMALL)} {len(SMALL)}\n".encode() + SMALL
        )

    run(main())


def test_batch_empty(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            assert await post_batch(served.url, {"objects": []}) == (200, BATCH_CONTENT_TYPE, b"")

    run(main())


def test_batch_over_limit_413(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            status, _, body = await post_batch(served.url, {"objects": [UNKNOWN] * (MAX_BATCH + 1)})
            at_limit, _, _ = await post_batch(served.url, {"objects": [UNKNOWN] * MAX_BATCH})
        assert status == 413
        assert str(MAX_BATCH).encode() in body
        assert at_limit == 200

    run(main())
    assert store.opened.count(UNKNOWN) == MAX_BATCH  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "doc",
    [
        {"objects": ["../../etc/passwd"]},
        {"objects": [sha(SMALL).upper()]},
        {"objects": [1]},
        {"objects": sha(SMALL)},
        {"wanted": [sha(SMALL)]},
        [sha(SMALL)],
        {"objects": [sha(SMALL)], "max_size": -1},
        {"objects": [sha(SMALL)], "max_size": "1"},
    ],
)
def test_batch_malformed_400_without_touching_the_store(store: Store, doc: object) -> None:
    async def main() -> None:
        async with running(store) as served:
            status, _, body = await post_batch(served.url, doc)
        assert status == 400
        assert SMALL not in body

    run(main())
    assert store.opened == []  # type: ignore[attr-defined]


def test_batch_body_not_json_400(store: Store) -> None:
    async def main() -> None:
        async with running(store) as served:
            resp = await raw(served.url, "POST", "/objects/batch", bearer(), b"{nope")
        assert resp.status == 400

    run(main())
