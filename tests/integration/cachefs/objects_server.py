"""A real object service on 127.0.0.1 for tests, and raw HTTP requests to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from yarl import URL

from cachefs.service import base_url, make_app, secret_token_check, serve_app
from cachefs.store import Store

SECRET = "test-secret-token"


@dataclass
class Served:
    url: str
    #: (method, path) of every response the server prepared, 401s included.
    seen: list[tuple[str, str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running(store: Store, secret: str = SECRET) -> AsyncIterator[Served]:
    """The real service for ``store`` on a free loopback port, counting requests."""
    app = make_app(store, secret_token_check(secret))
    served = Served("")

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        served.seen.append((request.method, request.path))

    app.on_response_prepare.append(record)
    runner = await serve_app(app, "127.0.0.1", 0)
    served.url = base_url(runner)
    try:
        yield served
    finally:
        await runner.cleanup()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw(
    url: str, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> RawResponse:
    """Send ``target`` byte for byte (no client normalises it) and read to EOF."""
    u = URL(url)
    assert u.host is not None and u.port is not None
    reader, writer = await asyncio.open_connection(u.host, u.port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {u.host}:{u.port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {data!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), parsed, rest)


def bearer(token: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
