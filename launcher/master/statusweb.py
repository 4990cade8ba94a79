"""The master's read-only status service (``[services.status]``, port 4874).

One aiohttp application for what people and Prometheus look at: ``/metrics``
(launcher.master.metrics) and the status pages. Each part brings its routes;
this module only puts them together and refuses every method but GET and HEAD
(nothing here changes the master's state). The daemon serves it behind
``httpguard.LimitedTCPSite`` like every TCP service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The methods the status service answers.
READ_METHODS = frozenset({"GET", "HEAD"})


@web.middleware
async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """405 for any method that could change something."""
    if request.method not in READ_METHODS:
        raise web.HTTPMethodNotAllowed(request.method, sorted(READ_METHODS))
    return await handler(request)


def status_app(*route_groups: Iterable[web.RouteDef]) -> web.Application:
    """The status service's application: every group's routes, read-only."""
    app = web.Application(middlewares=[read_only])
    for routes in route_groups:
        app.add_routes(routes)
    return app
