"""The master's read-only ``status`` service (``[services.status]``): one aiohttp app.

What people and Prometheus look at: the status pages (statuspages.py, their
live stream statusevents.py, login statusauth.py) and ``/metrics``
(metrics.py). Each part brings its routes; :func:`status_app` puts them into
one app with the package's static files (``launcher/master/static``: the
page's JavaScript and CSS ship in the package, nothing is fetched from the
internet), refuses every method but GET and HEAD (nothing here changes the
master's state), and adds headers that keep a browser from running anything
else: a Content-Security-Policy of ``'self'`` only, no framing, no sniffing.
statusservice.py serves it behind ``httpguard.LimitedTCPSite``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web

#: The page's JavaScript and CSS (package data).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The methods the status service answers.
READ_METHODS = frozenset({"GET", "HEAD"})

RouteGroup = Iterable[web.AbstractRouteDef]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # a token in a URL never leaves in a Referer
}


@web.middleware
async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """405 for any method that could change something."""
    if request.method not in READ_METHODS:
        raise web.HTTPMethodNotAllowed(request.method, sorted(READ_METHODS))
    return await handler(request)


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_HEADERS)
        raise
    if not response.prepared:  # a stream sent its headers already (it set its own)
        response.headers.update(_HEADERS)
    return response


def status_app(*route_groups: RouteGroup) -> web.Application:
    """The status service's app: every group's routes, and ``/static/``; read-only."""
    app = web.Application(middlewares=[_security_headers, read_only])
    for group in route_groups:
        app.add_routes(group)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app
