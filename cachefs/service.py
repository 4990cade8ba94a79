"""The object service: the store's objects over HTTP (wire protocol v1, docs/cachefs.md).

Trust model: every request must carry ``Authorization: Bearer <token>`` that
the :data:`TokenCheck` accepts (constant-time); anything else gets 401 with no
body, whatever the path. Only three requests are served: ``GET``/``HEAD
/objects/<sha256>`` and ``POST /objects/batch``. An object name that is not
exactly 64 lowercase hex digits is 404 before the store is asked, so no
request path can name a file outside ``ROOT/objects``.

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
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from aiohttp import hdrs, web

from cachefs.errors import ObjectMissingError, ServiceConfigError, StoreError
from cachefs.manifest import is_sha256
from cachefs.store import Store

TokenCheck = Callable[[str], bool]

PROTOCOL_VERSION = 1
BATCH_CONTENT_TYPE = "application/x-beolaunch-batch"
#: Most objects one POST /objects/batch may ask for.
MAX_BATCH = 4096
#: Objects up to this size are read whole into a batch frame; larger ones are
#: streamed in chunks of this size.
INLINE_BYTES = 256 * 1024
#: Bytes of small objects read per executor call while answering a batch.
GROUP_BYTES = 1 << 20

STORE_KEY = web.AppKey("store", Store)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)
_IMMUTABLE = "public, max-age=31536000, immutable"


def secret_token_check(secret: str) -> TokenCheck:
    """A TokenCheck accepting exactly ``secret`` (compared in constant time).

    Raises ServiceConfigError for an empty secret."""
    if not secret:
        raise ServiceConfigError("the secret is empty; set a long random one on master and nodes")
    expected = secret.encode()

    def check(token: str) -> bool:
        return hmac.compare_digest(token.encode(), expected)

    return check


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


def _open_object(store: Store, digest: str) -> tuple[BinaryIO, int] | None:
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
    store: Store, wanted: Sequence[str], i: int, max_size: int | None
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


async def _stream_body(resp: web.StreamResponse, f: BinaryIO, size: int, digest: str) -> None:
    loop = asyncio.get_running_loop()
    left = size
    while left:
        chunk = await loop.run_in_executor(None, f.read, min(INLINE_BYTES, left))
        if not chunk:
            # Headers said `size`: ending early would mis-frame. Raising aborts
            # the connection without the final chunk, which the client sees.
            raise StoreError(f"object {digest} ended {left} bytes short of its {size}")
        await resp.write(chunk)
        left -= len(chunk)


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


async def _object(request: web.Request) -> web.StreamResponse:
    digest = request.match_info["sha256"]
    if not is_sha256(digest):
        raise web.HTTPNotFound()
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
            await _send(request, resp, f, start, count)
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


async def _batch(request: web.Request) -> web.StreamResponse:
    try:
        doc = await request.json()
    except ValueError:
        return _refuse(400, "the body must be JSON")
    parsed = _batch_request(doc)
    if isinstance(parsed, web.Response):
        return parsed
    wanted, max_size = parsed
    store = request.app[STORE_KEY]
    loop = asyncio.get_running_loop()
    resp = web.StreamResponse(headers={hdrs.CONTENT_TYPE: BATCH_CONTENT_TYPE})
    await resp.prepare(request)
    i = 0
    while i < len(wanted):
        frames, i, large = await loop.run_in_executor(
            None, _read_frames, store, wanted, i, max_size
        )
        if frames:
            await resp.write(frames)
        if large is not None:
            f, size, digest = large
            try:
                await _stream_body(resp, f, size, digest)
            finally:
                f.close()
    await resp.write_eof()
    return resp


def make_app(store: Store, tokens: TokenCheck) -> web.Application:
    """The object service for ``store``, admitting requests whose bearer token passes ``tokens``."""

    @web.middleware
    async def authenticate(
        request: web.Request,
        handler: Callable[[web.Request], Any],
    ) -> web.StreamResponse:
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or not tokens(token):
            return web.Response(
                status=401, headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="beolaunch objects"'}
            )
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[authenticate])
    app[STORE_KEY] = store
    app.router.add_route("GET", "/objects/{sha256}", _object)
    app.router.add_route("HEAD", "/objects/{sha256}", _object)
    app.router.add_route("POST", "/objects/batch", _batch)
    return app


async def serve_app(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on host:port (0: any free port); stop with ``await runner.cleanup()``."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(
    store: Store, tokens: TokenCheck, host: str = "127.0.0.1", port: int = 0
) -> web.AppRunner:
    """Serve ``store`` in this event loop; :func:`base_url` says where."""
    return await serve_app(make_app(store, tokens), host, port)


def base_url(runner: web.AppRunner) -> str:
    """``http://host:port`` of the first address ``runner`` listens on."""
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
