"""``GET /events``: the status page's live stream (server-sent events).

Each event is one whole snapshot of :class:`~launcher.master.statusfeed.StatusFeed`
(``data: JSON``), the same string for every stream: a stream costs the master
a write per tick, never a query (statusfeed.py). A comment line every
KEEPALIVE_S on an idle stream notices a browser that went away.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from launcher.master.statusauth import StatusAuth
from launcher.master.statusfeed import StatusFeed

#: Seconds between keepalive comments when no snapshot comes.
KEEPALIVE_S = 15.0
#: Milliseconds a browser waits before reconnecting a dropped stream.
RETRY_MS = 3000


class StatusEvents:
    def __init__(self, auth: StatusAuth, feed: StatusFeed) -> None:
        self.auth = auth
        self.feed = feed

    async def events(self, request: web.Request) -> web.StreamResponse:
        viewer = self.auth.viewer(request)
        if isinstance(viewer, web.Response):
            return viewer
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        await resp.prepare(request)
        queue = self.feed.subscribe()
        try:
            await resp.write(f"retry: {RETRY_MS}\n\n".encode())
            while True:
                try:
                    text = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                await resp.write(f"data: {text}\n\n".encode())
        except (ConnectionError, RuntimeError):
            pass  # the browser went away
        finally:
            self.feed.unsubscribe(queue)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/events", self.events)]
