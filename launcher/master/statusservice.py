"""Starting the status service: its parts made, its site listening, its feed ticking.

``daemon.py`` calls :func:`start_status` with the master's parts; the answer
makes login URLs for the user API's ``GET /status-login`` (``beostat web``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable

from cachefs import httpguard
from launcher.config import ServiceAddress
from launcher.master import statustoken
from launcher.master.dbwork import DbWork
from launcher.master.nodes import NodeRegistry
from launcher.master.scheduler import Scheduler
from launcher.master.statusauth import StatusAuth
from launcher.master.statusevents import StatusEvents
from launcher.master.statusfeed import StatusFeed
from launcher.master.statuspages import StatusPages
from launcher.master.statusweb import RouteGroup, status_app

#: Browsers' connections the service holds at once (each open page keeps one
#: event stream; a browser opens up to 6 per host).
STATUS_CONNECTIONS = 256


def base_url(service: ServiceAddress, port: int) -> str:
    """The URL a browser on the cluster reaches the service at: its address, or
    this host's name when it listens on every address."""
    host = service.address
    if ipaddress.ip_address(host).is_unspecified:
        host = socket.getfqdn()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def start_status(
    stack: contextlib.AsyncExitStack,
    service: ServiceAddress,
    secret: str,
    db: DbWork,
    registry: NodeRegistry,
    scheduler: Scheduler,
    *,
    routes: Iterable[RouteGroup] = (),
) -> tuple[StatusFeed, Callable[[int], str]]:
    """Serve the status page, and the other parts' ``routes`` (``/metrics``), on
    ``service`` until ``stack`` closes; the feed, and uid -> a login URL for that uid."""
    auth = StatusAuth(secret)
    feed = StatusFeed(db, registry.views, lambda: scheduler.runs, ended=lambda: scheduler.ended)
    pages = StatusPages(auth, feed, db, lambda: scheduler.runs)
    events = StatusEvents(auth, feed)
    app = status_app(auth.routes(), pages.routes(), events.routes(), *routes)
    runner = httpguard.runner(app, shutdown_timeout=1.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = httpguard.LimitedTCPSite(runner, service.address, service.port, limit=STATUS_CONNECTIONS)
    await site.start()
    task = asyncio.create_task(feed.run_forever())

    async def stop_feed() -> None:
        task.cancel()
        await asyncio.wait([task])

    stack.push_async_callback(stop_feed)
    url = base_url(service, service.port)

    def login_url(uid: int) -> str:
        return f"{url}/login?token={statustoken.issue(secret, uid)}"

    return feed, login_url
