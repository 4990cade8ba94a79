"""The object service: the store's objects over HTTP (wire protocol v1, docs/cachefs.md).

The master serves its store; a node serves its cache to peers with the same
protocol and token, plus :class:`Flights`: objects still being downloaded there
are streamed as they are written (cut-through), and a request naming a job
(header ``Beolaunch-Job``) first waits, bounded, for that job's fill to start.

Trust model: every request must carry ``Authorization: Bearer <token>`` for
which the :data:`Authorizer` gives a :data:`Grant`; anything else gets 401
with no body, whatever the path. The grant says which objects the token may
read (Beolaunch: one job's manifest); any other object is 403, whether or not
the store has it, so a token tells nothing about the rest of the store. Only
three requests are served: ``GET``/``HEAD /objects/<sha256>`` and ``POST
/objects/batch``. An object name that is not
exactly 64 lowercase hex digits is 404 before the store is asked, so no
request path can name a file outside ``ROOT/objects``.

Egress: with ``on_sent``, the service tells its owner how many body bytes it
sent under each bearer token (object bodies and, in a batch, the frame header
lines too: about 70 bytes an object), counted as they are handed to the
socket; Beolaunch's master keeps them per job (``launcher.master.capability``).

Objects are immutable, so the ETag is the digest and a Range may be answered
from any copy. Single objects go out with ``sendfile`` (aiohttp's
``FileResponse`` does too, but its ETag is mtime-size and it looks for
``.gz``/``.br`` siblings, neither of which fits a content-addressed store).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, BinaryIO, Protocol

from aiohttp import hdrs, web

from cachefs import httpguard
from cachefs.errors import ObjectMissingError, RequestBodyError, ServiceConfigError, StoreError
from cachefs.manifest import is_sha256
from cachefs.store import StoreReader

#: Which objects a request may read: sha256 -> allowed.
Grant = Callable[[str], bool]
#: What a bearer token grants; None refuses the token (401).
Authorizer = Callable[[str], Grant | None]
#: The older name: an Authorizer (kept for a release).
TokenCheck = Authorizer
#: Told the body bytes sent under a bearer token: (token, bytes).
SentHook = Callable[[str, int], None]


class Growing(Protocol):
    """An object still being written (a peer's download in progress)."""

    size: int
    file: BinaryIO

    def fileno(self) -> int: ...

    def ranges(self, start: int, end: int) -> AsyncIterator[tuple[int, int]]:
        """(offset, count) of bytes in [start, end) as they are written; ends once
        the object is installed, raises when its download failed."""
        ...

    def close(self) -> None: ...


class Flights(Protocol):
    """Downloads in progress where the service runs (cachefs.cache.flights)."""

    async def join(self, job: str) -> None:
        """Wait, bounded, until a fill for ``job`` has started here."""

    async def track(self, digest: str) -> Growing | None:
        """The object's download in progress; None when it is installed or will not be."""


PROTOCOL_VERSION = 1
BATCH_CONTENT_TYPE = "application/x-beolaunch-batch"
#: Most objects one POST /objects/batch may ask for.
MAX_BATCH = 4096
#: Its largest body: MAX_BATCH names of 67 bytes, with room.
MAX_BATCH_BODY = 1 << 20
#: Objects up to this size are read whole into a batch frame; larger ones are
#: streamed in chunks of this size.
INLINE_BYTES = 256 * 1024
#: Bytes of small objects read per executor call while answering a batch.
GROUP_BYTES = 1 << 20

#: Names the job a peer fills for (a decimal id): the node waits for that job's fill.
JOB_HEADER = "Beolaunch-Job"

STORE_KEY = web.AppKey("store", StoreReader)
FLIGHTS_KEY = web.AppKey("flights", Flights)
AUTHORIZE_KEY: web.AppKey[Authorizer] = web.AppKey("authorize")
SENT_KEY: web.AppKey[SentHook] = web.AppKey("sent")
_JOB = re.compile(r"[0-9]{1,20}", re.ASCII)
# At most 19 digits a bound (any object size fits): int() of thousands raised
# ValueError, a 500 (found by fuzzing); a longer one is ignored like bad syntax.
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.ASCII)
_IMMUTABLE = "public, max-age=31536000, immutable"


def _everything(_digest: str) -> bool:
    return True


def secret_token_check(secret: str) -> Authorizer:
    """An Authorizer granting every object to exactly ``secret`` (compared in
    constant time): for a store served to one trusted client. Beolaunch's master
    does not use it (the cluster secret never leaves the master): it grants each
    job's objects only (``launcher.master.capability``).

    Raises ServiceConfigError for an empty secret."""
    if not secret:
        raise ServiceConfigError("the secret is empty; set a long random one on master and nodes")
    expected = secret.encode()

    def check(token: str) -> Grant | None:
        return _everything if hmac.compare_digest(token.encode(), expected) else None

    return check


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _grant(request: web.Request) -> Grant | None:
    token = _bearer(request)
    return request.app[AUTHORIZE_KEY](token) if token is not None else None


def _sent(request: web.Request, count: int) -> None:
    """``count`` more body bytes went out for ``request``: tell the owner's hook."""
    hook = request.app.get(SENT_KEY)
    token = _bearer(request)
    if hook is not None and token is not None and count:
        hook(token, count)


def _granted(request: web.Request, digest: str) -> bool:
    # Asked again here, not kept from the middleware: request storage keys are typed
    # only from aiohttp 3.14, and one HMAC or dict lookup costs microseconds.
    grant = _grant(request)
    return grant is not None and grant(digest)


def _byte_range(header: str, size: int) -> tuple[int, int, bool] | None:
    """(start, count, partial) for a Range header; None when unsatisfiable (416).

    One ``bytes=A-B``, ``bytes=A-`` or ``bytes=-N`` is served; a header we do
    not serve (several ranges, bad syntax) is ignored, as RFC 9110 14.2 allows:
    the whole object goes out."""
    whole = (0, size, False)
    m = _RANGE.fullmatch(header.strip())
    if m is None or m.groups() == ("", ""):
        return whole
    first, last = m.groups()
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return None
        start = max(size - n, 0)
        return start, size - start, True
    start = int(first)
    if last and int(last) < start:
        return whole
    if start >= size:
        return None
    end = size - 1 if not last else min(int(last), size - 1)
    return start, end - start + 1, True


def _open_object(store: StoreReader, digest: str) -> tuple[BinaryIO, int] | None:
    """The object opened and its size; None when the store does not have it."""
    try:
        f = store.open(digest)
    except ObjectMissingError:
        return None
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        f.close()
        return None
    return f, st.st_size


def _read_exact(f: BinaryIO, size: int, digest: str) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise StoreError(f"object {digest} holds {len(data)} bytes, not its {size}")
    return data


def _read_frames(
    store: StoreReader, wanted: Sequence[str], i: int, max_size: int | None
) -> tuple[bytes, int, tuple[BinaryIO, int, str] | None]:
    """Frames for ``wanted[i:]`` until about GROUP_BYTES are read.

    Returns the frame bytes, the next index, and an open large object whose
    header ends the frames and whose body the caller streams."""
    out = bytearray()
    while i < len(wanted) and len(out) < GROUP_BYTES:
        digest = wanted[i]
        i += 1
        try:
            opened = _open_object(store, digest)
        except OSError:
            opened = None  # unreadable here: the client asks another source
        if opened is None:
            out += f"{digest} -\n".encode()
            continue
        f, size = opened
        if max_size is not None and size > max_size:
            f.close()
            out += f"{digest} {size} get\n".encode()
            continue
        out += f"{digest} {size}\n".encode()
        if size > INLINE_BYTES:
            return bytes(out), i, (f, size, digest)
        with f:
            out += _read_exact(f, size, digest)
    return bytes(out), i, None


async def _stream_body(
    request: web.Request, resp: web.StreamResponse, f: BinaryIO, size: int, digest: str
) -> None:
    loop = asyncio.get_running_loop()
    left = size
    while left:
        chunk = await loop.run_in_executor(None, f.read, min(INLINE_BYTES, left))
        if not chunk:
            # Headers said `size`: ending early would mis-frame. Raising aborts
            # the connection without the final chunk, which the client sees.
            raise StoreError(f"object {digest} ended {left} bytes short of its {size}")
        await resp.write(chunk)
        _sent(request, len(chunk))
        left -= len(chunk)


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


async def _object(request: web.Request) -> web.StreamResponse:
    digest = request.match_info["sha256"]
    if not is_sha256(digest):
        raise web.HTTPNotFound()
    if not _granted(request, digest):
        return _refuse(403, f"object {digest} is not one this token grants")
    flights = request.app.get(FLIGHTS_KEY)
    growing = await flights.track(digest) if flights is not None else None
    if growing is not None:
        f, size = growing.file, growing.size
    else:
        loop = asyncio.get_running_loop()
        opened = await loop.run_in_executor(None, _open_object, request.app[STORE_KEY], digest)
        if opened is None:
            raise web.HTTPNotFound()
        f, size = opened
    try:
        headers = {
            hdrs.ETAG: f'"{digest}"',
            hdrs.ACCEPT_RANGES: "bytes",
            hdrs.CACHE_CONTROL: _IMMUTABLE,
        }
        inm = request.if_none_match
        if inm is not None and any(e.value in (digest, "*") for e in inm):
            return web.Response(status=304, headers=headers)
        start, count, status = 0, size, 200
        rng = request.headers.get(hdrs.RANGE)
        if_range = request.headers.get(hdrs.IF_RANGE)
        if rng is not None and (if_range is None or if_range.strip() == f'"{digest}"'):
            asked = _byte_range(rng, size)
            if asked is None:
                headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            start, count, partial = asked
            if partial:
                status = 206
                headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + count - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_type = "application/octet-stream"
        resp.content_length = count
        await resp.prepare(request)
        if request.method != hdrs.METH_HEAD and count:
            if growing is None:
                await _send(request, resp, f, start, count)
                _sent(request, count)
            else:
                # A failed download raises here: the connection is dropped short
                # of Content-Length, which the receiver sees as a broken source.
                async for offset, n in growing.ranges(start, start + count):
                    await _send(request, resp, f, offset, n)
                    _sent(request, n)
        await resp.write_eof()
        return resp
    finally:
        f.close()


async def _send(
    request: web.Request, resp: web.StreamResponse, f: BinaryIO, start: int, count: int
) -> None:
    """``count`` bytes of ``f`` from ``start``: sendfile, or reads where the loop lacks it."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    loop = asyncio.get_running_loop()
    try:
        await loop.sendfile(transport, f, start, count)
        return
    except NotImplementedError:
        pass
    f.seek(start)
    left = count
    while left:
        chunk = await loop.run_in_executor(None, f.read, min(INLINE_BYTES, left))
        if not chunk:
            raise StoreError(f"object {request.match_info['sha256']} ended early")
        await resp.write(chunk)
        left -= len(chunk)


def _batch_request(doc: Any) -> tuple[list[str], int | None] | web.Response:
    if not isinstance(doc, dict) or not isinstance(doc.get("objects"), list):
        return _refuse(400, 'expected {"objects": ["<sha256>", ...]}')
    wanted = doc["objects"]
    if len(wanted) > MAX_BATCH:
        return _refuse(413, f"at most {MAX_BATCH} objects per batch; split the request")
    if not all(is_sha256(d) for d in wanted):
        return _refuse(400, "every object must be 64 lowercase hex digits")
    max_size = doc.get("max_size")
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0
    ):
        return _refuse(400, "max_size must be a byte count >= 0")
    return wanted, max_size


async def _growing_frame(
    request: web.Request,
    resp: web.StreamResponse,
    growing: Growing,
    digest: str,
    max_size: int | None,
) -> None:
    """The frame of an object in flight: its body as it is written, or ``get``."""
    size = growing.size
    if max_size is not None and size > max_size:
        await resp.write(f"{digest} {size} get\n".encode())
        return
    await resp.write(f"{digest} {size}\n".encode())
    async for offset, n in growing.ranges(0, size):
        end = offset + n
        while offset < end:
            chunk = os.pread(growing.fileno(), min(INLINE_BYTES, end - offset), offset)
            if not chunk:
                raise StoreError(f"object {digest} being written ended at {offset} bytes")
            await resp.write(chunk)
            _sent(request, len(chunk))
            offset += len(chunk)


async def _batch(request: web.Request) -> web.StreamResponse:
    try:
        doc = await httpguard.read_json(request, limit=MAX_BATCH_BODY, what="the batch request")
    except RequestBodyError as exc:
        return _refuse(exc.status, str(exc))
    parsed = _batch_request(doc)
    if isinstance(parsed, web.Response):
        return parsed
    wanted, max_size = parsed
    refused = next((d for d in wanted if not _granted(request, d)), None)
    if refused is not None:
        return _refuse(403, f"object {refused} is not one this token grants")
    store = request.app[STORE_KEY]
    flights = request.app.get(FLIGHTS_KEY)
    loop = asyncio.get_running_loop()
    resp = web.StreamResponse(headers={hdrs.CONTENT_TYPE: BATCH_CONTENT_TYPE})
    await resp.prepare(request)
    i = 0
    while i < len(wanted):
        end = len(wanted)
        if flights is not None:
            # One object at a time: the next one may be only expected yet.
            growing = await flights.track(wanted[i])
            if growing is not None:
                try:
                    await _growing_frame(request, resp, growing, wanted[i], max_size)
                finally:
                    growing.close()
                i += 1
                continue
            end = i + 1
        frames, i, large = await loop.run_in_executor(
            None, _read_frames, store, wanted[:end], i, max_size
        )
        if frames:
            await resp.write(frames)
            _sent(request, len(frames))
        if large is not None:
            f, size, digest = large
            try:
                await _stream_body(request, resp, f, size, digest)
            finally:
                f.close()
    await resp.write_eof()
    return resp


def _join_job(flights: Flights) -> Any:
    """Middleware: a request naming a job waits (bounded) for that job's fill here.

    It runs before the token check: a node learns the token from the job's
    ``prepare``, which may arrive after its child's first request."""

    @web.middleware
    async def join_job(
        request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        job = request.headers.get(JOB_HEADER)
        if job is not None:
            if not _JOB.fullmatch(job):
                return _refuse(400, f"{JOB_HEADER} must be a job id (decimal digits)")
            await flights.join(job)
        response: web.StreamResponse = await handler(request)
        return response

    return join_job


def make_app(
    store: StoreReader,
    authorize: Authorizer,
    *,
    flights: Flights | None = None,
    on_sent: SentHook | None = None,
) -> web.Application:
    """The object service for ``store``: a request's bearer token must get a
    Grant from ``authorize`` (else 401), and only objects the grant allows are
    served (else 403), whatever the store holds.

    With ``flights`` (a node serving its cache to peers), objects in flight are
    streamed as they are written and requests naming a job wait for it. With
    ``on_sent``, each body write is told (token, bytes) as it goes out."""

    @web.middleware
    async def authenticate(
        request: web.Request,
        handler: Callable[[web.Request], Any],
    ) -> web.StreamResponse:
        if _grant(request) is None:
            return web.Response(
                status=401, headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="beolaunch objects"'}
            )
        response: web.StreamResponse = await handler(request)
        return response

    middlewares = [authenticate] if flights is None else [_join_job(flights), authenticate]
    app = web.Application(middlewares=middlewares)
    app[STORE_KEY] = store
    app[AUTHORIZE_KEY] = authorize
    if flights is not None:
        app[FLIGHTS_KEY] = flights
    if on_sent is not None:
        app[SENT_KEY] = on_sent
    app.router.add_route("GET", "/objects/{sha256}", _object)
    app.router.add_route("HEAD", "/objects/{sha256}", _object)
    app.router.add_route("POST", "/objects/batch", _batch)
    return app


async def serve_app(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 60.0
) -> web.AppRunner:
    """Start ``app`` on host:port (0: any free port); stop with ``await runner.cleanup()``,
    which waits up to ``shutdown_timeout`` seconds for requests in progress.

    Guarded (cachefs.httpguard): a request head within 10 s, bounded bodies,
    at most MAX_CONNECTIONS connections at once."""
    runner = httpguard.runner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await httpguard.LimitedTCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(
    store: StoreReader, authorize: Authorizer, host: str = "127.0.0.1", port: int = 0
) -> web.AppRunner:
    """Serve ``store`` in this event loop; :func:`base_url` says where."""
    return await serve_app(make_app(store, authorize), host, port)


def base_url(runner: web.AppRunner) -> str:
    """``http://host:port`` of the first address ``runner`` listens on."""
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
