"""HttpSource: an ObjectSource over the object service (cachefs.service).

Small objects come in batches (``POST /objects/batch``, up to 4096 a request,
one round trip for a closure's hundreds of libraries); the batch answers
objects above ``small_limit`` with their size only, and those are fetched by
``GET`` with a few requests in flight, so the next one's headers and first
bytes arrive while the cache is still writing the current one.

The client never verifies digests (the cache does), but it never mis-frames:
a frame for another object than the one asked next, a malformed header line,
a body shorter than announced, or bytes after the last frame raise
SourceProtocolError.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import NoReturn

import aiohttp

from cachefs.errors import SourceAuthError, SourceProtocolError, SourceUnreachableError
from cachefs.manifest import is_sha256
from cachefs.service import BATCH_CONTENT_TYPE, MAX_BATCH
from cachefs.source import Incoming

#: Objects up to this size travel in batches; larger ones by GET.
SMALL_LIMIT = 1 << 20
#: Bytes per chunk handed to the cache.
CHUNK = 256 * 1024
#: Longest batch header line we accept: "<64 hex> <20 digits> get\n" is 90.
_MAX_LINE = 128


async def _read_line(reader: aiohttp.StreamReader) -> bytes:
    """Up to and including the next newline, at most _MAX_LINE bytes; shorter
    without a newline at the end of the stream."""
    line = bytearray()
    while len(line) < _MAX_LINE:
        # The digest and its space are 65 bytes: take them at once, then bytewise.
        byte = await reader.read(65 if not line else 1)
        if not byte:
            break
        line += byte
        if line.endswith(b"\n"):
            break
    return bytes(line)


class _Body:
    """Exactly ``size`` bytes of an object from a response stream, as chunks."""

    def __init__(
        self, reader: aiohttp.StreamReader, size: int, digest: str, source: HttpSource
    ) -> None:
        self._reader = reader
        self.left = size
        self._size = size
        self._digest = digest
        self._source = source

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self.left == 0:
            raise StopAsyncIteration
        try:
            chunk = await self._reader.read(min(self.left, CHUNK))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._source.failed(exc, f"while receiving object {self._digest}")
        if not chunk:
            raise SourceProtocolError(
                self._source.label,
                f"the response ended {self.left} bytes short of object {self._digest} "
                f"({self._size} bytes); the service or the connection failed, fetch again",
            )
        self.left -= len(chunk)
        return chunk

    async def drain(self) -> None:
        """Consume what the cache left unread, so the next frame starts where it should."""
        async for _ in self:
            pass


class HttpSource:
    """Objects from the object service at ``base_url`` (``http://host:port``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        kind: str = "master",
        session: aiohttp.ClientSession | None = None,
        small_limit: int = SMALL_LIMIT,
        batch_limit: int = MAX_BATCH,
        connections: int = 4,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``headers`` go with every request (a peer is told the job: JOB_HEADER)."""
        if not 1 <= batch_limit <= MAX_BATCH:
            raise ValueError(f"batch_limit must be 1..{MAX_BATCH}")
        self.base_url = base_url.rstrip("/")
        self.label = self.base_url
        self.kind = kind
        self.small_limit = small_limit
        self.batch_limit = batch_limit
        self.connections = max(1, connections)
        self._session = session
        self._headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )

    def __repr__(self) -> str:
        return f"HttpSource({self.base_url!r}, kind={self.kind!r})"

    def failed(self, exc: BaseException, when: str) -> NoReturn:
        """Raise the SourceError for an aiohttp/OS error ``exc`` met ``when``."""
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise SourceProtocolError(
                self.label, f"the response was cut short {when} ({exc}); fetch again"
            ) from exc
        raise SourceUnreachableError(
            self.label,
            f"connection failed {when} ({str(exc) or type(exc).__name__}); check that the "
            "object service runs there and the address is right",
        ) from exc

    def _check_status(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 401:
            raise SourceAuthError(
                self.label,
                "the token was refused (HTTP 401); give this node the token the "
                "object service was started with",
            )
        if resp.status != 200:
            raise SourceProtocolError(
                self.label,
                f"{resp.method} {resp.url.path} answered HTTP {resp.status} {resp.reason}; "
                "is this a Beolaunch object service of protocol version 1?",
            )

    async def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        """Yield the wanted objects the service has (see cachefs.source.ObjectSource)."""
        digests = [d for d in dict.fromkeys(wanted) if is_sha256(d)]
        if not digests:
            return
        session = self._session or aiohttp.ClientSession(timeout=self._timeout)
        try:
            large: list[str] = []
            for i in range(0, len(digests), self.batch_limit):
                async for incoming in self._batch(
                    session, digests[i : i + self.batch_limit], large
                ):
                    yield incoming
            async for incoming in self._get_many(session, large):
                yield incoming
        finally:
            if self._session is None:
                await session.close()

    # --- POST /objects/batch -------------------------------------------------

    async def _batch(
        self, session: aiohttp.ClientSession, batch: list[str], large: list[str]
    ) -> AsyncIterator[Incoming]:
        url = f"{self.base_url}/objects/batch"
        body = {"objects": batch, "max_size": self.small_limit}
        try:
            resp = await session.post(url, json=body, headers=self._headers, timeout=self._timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.failed(exc, "sending a batch request")
        try:
            self._check_status(resp)
            if resp.content_type != BATCH_CONTENT_TYPE:
                raise SourceProtocolError(
                    self.label, f"a batch came back as {resp.content_type!r}, not a batch"
                )
            for expected in batch:
                digest, size, inline = await self._frame_header(resp.content, expected)
                if size is None:
                    continue
                if not inline:
                    large.append(digest)
                    continue
                chunks = _Body(resp.content, size, digest, self)
                yield Incoming(digest, size, chunks)
                await chunks.drain()
            try:
                extra = await resp.content.read(1)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.failed(exc, "after the last frame")
            if extra:
                raise SourceProtocolError(self.label, "bytes follow the last frame of a batch")
        finally:
            resp.release()

    async def _frame_header(
        self, reader: aiohttp.StreamReader, expected: str
    ) -> tuple[str, int | None, bool]:
        """Parse ``<sha256> <size>\\n``, ``<sha256> -\\n`` or ``<sha256> <size> get\\n``:
        (digest, size or None when unknown, whether the body follows)."""
        try:
            line = await _read_line(reader)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.failed(exc, f"while waiting for object {expected}")
        if not line.endswith(b"\n"):
            if len(line) >= _MAX_LINE:
                raise SourceProtocolError(self.label, f"a batch frame header is too long: {line!r}")
            raise SourceProtocolError(
                self.label,
                f"the batch ended (or broke) before the frame of object {expected}; fetch again",
            )
        parts = line[:-1].split(b" ")
        if parts[0] != expected.encode():
            raise SourceProtocolError(
                self.label,
                f"a frame header {line[:_MAX_LINE]!r} came where object {expected} was due",
            )
        rest = parts[1:]
        if rest == [b"-"]:
            return expected, None, False
        if 1 <= len(rest) <= 2 and rest[0].isdigit() and len(rest[0]) <= 20:
            if len(rest) == 1:
                return expected, int(rest[0]), True
            if rest[1] == b"get":
                return expected, int(rest[0]), False
        raise SourceProtocolError(self.label, f"malformed batch frame header {line!r}")

    # --- GET /objects/<sha256> -----------------------------------------------

    async def _open_get(
        self, session: aiohttp.ClientSession, digest: str
    ) -> aiohttp.ClientResponse | None:
        try:
            resp = await session.get(
                f"{self.base_url}/objects/{digest}", headers=self._headers, timeout=self._timeout
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.failed(exc, f"asking for object {digest}")
        if resp.status == 404:
            resp.release()
            return None
        try:
            self._check_status(resp)
            if resp.content_length is None:
                raise SourceProtocolError(self.label, f"object {digest} came without a length")
        except BaseException:
            resp.release()
            raise
        return resp

    async def _get_many(
        self, session: aiohttp.ClientSession, digests: list[str]
    ) -> AsyncIterator[Incoming]:
        todo = iter(digests)
        pending: deque[tuple[str, asyncio.Task[aiohttp.ClientResponse | None]]] = deque()

        def start_one() -> None:
            digest = next(todo, None)
            if digest is not None:
                pending.append((digest, asyncio.ensure_future(self._open_get(session, digest))))

        for _ in range(self.connections):
            start_one()
        try:
            while pending:
                digest, task = pending.popleft()
                resp = await task
                start_one()
                if resp is None:
                    continue
                chunks = None
                try:
                    assert resp.content_length is not None
                    chunks = _Body(resp.content, resp.content_length, digest, self)
                    yield Incoming(digest, resp.content_length, chunks)
                finally:
                    if chunks is not None and chunks.left == 0:
                        resp.release()  # the connection goes back to the pool
                    else:
                        resp.close()  # a large body the cache gave up on: not worth reading
        finally:
            for _, task in pending:
                task.cancel()
                task.add_done_callback(_release_result)


def _release_result(task: asyncio.Task[aiohttp.ClientResponse | None]) -> None:
    """Release the response of a GET started but never handed out."""
    if not task.cancelled() and task.exception() is None:
        resp = task.result()
        if resp is not None:
            resp.release()
