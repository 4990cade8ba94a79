"""HTTP servers a slow, partial or hostile client cannot hold or crash.

Every aiohttp server of Beolaunch (the object service and a node's peer port
here; the master's user socket, control and boot services in ``launcher``)
starts through :func:`runner` and :class:`LimitedTCPSite`/:class:`LimitedUnixSite`
and reads request bodies through :func:`read_json`:

- headers: a connection that has not sent a whole request head within
  :data:`HEADER_TIMEOUT_S` of connecting (or of its previous answer) is closed.
  aiohttp's keep-alive timer does exactly this (it closes a connection whose
  handler is waiting for a request, however much of one arrived), so it is
  set to that many seconds; aiohttp's default was 75 s.
- bodies: a body larger than its limit is refused at once from Content-Length
  (413, naming the limit), and one that does not arrive within
  :func:`body_deadline` (:data:`HEADER_TIMEOUT_S` plus its size at
  :data:`MIN_BODY_RATE`) is answered 408. What is left of a body after the
  answer (unread, refused or late) is drained for at most aiohttp's 10 s
  lingering time, then the connection is closed.
- JSON: undecodable, not UTF-8, or nested past the interpreter's recursion
  limit (``json.loads`` raises RecursionError for 100,000 ``[``) is a 400.
- connections: at most :data:`MAX_CONNECTIONS` at once per listening site;
  one more is answered ``503`` with a JSON reason and closed, so a flood costs
  the server one descriptor per refused client for a moment, never a handler.

- logs: aiohttp logs each malformed request (the client's fault, answered
  400) as an ERROR with a traceback, and asyncio logs a failed ``accept()``
  (EMFILE) with a traceback, up to 100 times per listening socket a second
  (Python 3.11 goes on looping after the error): the probe of issue 12 made
  81 MB of them in 40 s. Both become one line per :data:`LOG_INTERVAL_S`,
  counting the ones left out (:func:`quiet_accept_errors` for the loop).

The master and the node agent raise their RLIMIT_NOFILE soft limit to the hard
one at start (``launcher.limits``), so the cap, not the descriptor table,
is what a flood meets first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from cachefs.errors import RequestBodyError

#: Seconds a client has to send a whole request head after connecting.
HEADER_TIMEOUT_S = 10.0
#: Bytes per second a request body must at least arrive at (after the head's allowance).
MIN_BODY_RATE = 1 << 20
#: The largest JSON body :func:`read_json` takes unless told otherwise.
DEFAULT_BODY_LIMIT = 1 << 20
#: Connections one listening site serves at once; more are answered 503 and closed.
MAX_CONNECTIONS = 512
#: Seconds between two log lines about malformed requests, or about failed accepts.
LOG_INTERVAL_S = 10.0

log = logging.getLogger(__name__)


class Throttle:
    """Lets one event through per ``interval`` seconds and counts the others."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = float("-inf")
        self._left_out = 0

    def tick(self, now: float) -> int | None:
        """None: leave this one out; else let it through, with the count left out since."""
        if now < self._next:
            self._left_out += 1
            return None
        left_out, self._left_out = self._left_out, 0
        self._next = now + self.interval
        return left_out


class _BriefClientErrors(logging.Filter):
    """A malformed request (aiohttp's HttpProcessingError below 500: the client's
    fault, already answered) logged as one WARNING line without a traceback, at
    most one per LOG_INTERVAL_S. Other records pass unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = Throttle(LOG_INTERVAL_S)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or exc.code >= 500:
            return True
        left_out = self.throttle.tick(time.monotonic())
        if left_out is None:
            return False
        client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        more = f" ({left_out} more since the last such line)" if left_out else ""
        record.msg = "refused a malformed request from %s: %s%s"
        record.args = (client, str(exc).replace("\n", " "), more)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


#: The logger aiohttp's request handlers log through (see :func:`runner`).
server_log = logging.getLogger(__name__ + ".server")
server_log.addFilter(_BriefClientErrors())


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` log a failed ``accept()`` (EMFILE, ENFILE, ENOBUFS, ENOMEM) as one
    line per LOG_INTERVAL_S; anything else goes to the handler it had before."""
    throttle = Throttle(LOG_INTERVAL_S)
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if str(context.get("message", "")).startswith("socket.accept() out of system"):
            left_out = throttle.tick(time.monotonic())
            if left_out is not None:
                log.error(
                    "cannot accept connections: %s (%d more since the last such line); they"
                    " wait in the backlog. Raise the open file limit (LimitNOFILE=, ulimit -n)",
                    exc,
                    left_out,
                )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def body_deadline(size: int) -> float:
    """Seconds a body of ``size`` bytes may take to arrive."""
    return HEADER_TIMEOUT_S + size / MIN_BODY_RATE


async def read_body(request: web.BaseRequest, *, limit: int, what: str) -> bytes:
    """The whole body of ``request``, at most ``limit`` bytes, within its deadline.

    Raises RequestBodyError: 413 when it is (or says it is) over ``limit``, 408
    when it does not arrive within :func:`body_deadline`. ``what`` names the
    body in the messages."""
    length = request.content_length
    if length is not None and length > limit:
        raise RequestBodyError(what, f"is {length} bytes, over the limit of {limit}", 413, limit)
    deadline = body_deadline(limit if length is None else length)
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise RequestBodyError(what, f"is over the limit of {limit} bytes", 413, limit)
                parts.append(chunk)
    except TimeoutError:
        raise RequestBodyError(
            what,
            f"did not arrive within {deadline:.0f} s ({size} bytes came); send it whole",
            408,
            limit,
        ) from None
    return b"".join(parts)


def parse_json(data: bytes, what: str) -> Any:
    """``data`` decoded as JSON; RequestBodyError (400) when it is not JSON we can decode."""
    try:
        return json.loads(data)
    except RecursionError:
        raise RequestBodyError(
            what, "is nested too deeply to decode; send a flatter document", 400
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise RequestBodyError(what, f"is not JSON: {exc}", 400) from None


async def read_json(
    request: web.BaseRequest, *, limit: int = DEFAULT_BODY_LIMIT, what: str = "the request body"
) -> Any:
    """The body of ``request`` read (:func:`read_body`) and decoded (:func:`parse_json`)."""
    return parse_json(await read_body(request, limit=limit, what=what), what)


def runner(app: web.Application, *, shutdown_timeout: float = 60.0) -> web.AppRunner:
    """An AppRunner for ``app`` whose connections get :data:`HEADER_TIMEOUT_S` for a
    request head (aiohttp's keep-alive timer, which also runs from the connection's
    start), logging through :data:`server_log` (malformed requests: one brief line)."""
    return web.AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=HEADER_TIMEOUT_S,
        logger=server_log,
    )


class _Busy(asyncio.Protocol):
    """A connection over the cap: told so in one HTTP answer, then closed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = json.dumps(
            {"error": f"the server is serving its limit of {self.limit} connections; retry later"}
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Retry-After: 1\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(head + body)
        transport.close()


class ConnectionCap:
    """A protocol factory that serves at most ``limit`` connections of ``server`` at once.

    Counted: the server's live connections, plus those whose protocol was made
    but whose ``connection_made`` has not run yet (asyncio accepts a burst of
    connections before any of them is set up). The second count is cleared by
    a callback queued just before the transport queues ``connection_made``, so
    the two run back to back and no other connection is counted in between."""

    def __init__(self, server: web.Server, limit: int = MAX_CONNECTIONS, name: str = "") -> None:
        self.server = server
        self.limit = limit
        #: the site, for the log line about refused connections
        self.name = name
        self._starting = 0
        self.refused = 0
        self._throttle = Throttle(LOG_INTERVAL_S)

    def _started(self) -> None:
        self._starting -= 1

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) + self._starting >= self.limit:
            self.refused += 1
            left_out = self._throttle.tick(time.monotonic())
            if left_out is not None:
                log.warning(
                    "%s serves its limit of %d connections: refused one (503) and %d more"
                    " since the last such line",
                    self.name or "a site",
                    self.limit,
                    left_out,
                )
            return _Busy(self.limit)
        self._starting += 1
        asyncio.get_running_loop().call_soon(self._started)
        return self.server()


def _cap_of(runner: web.BaseRunner, limit: int, name: str) -> ConnectionCap:
    server = runner.server
    if server is None:
        raise RuntimeError("call runner.setup() before making a site")
    return ConnectionCap(server, limit, name)


class LimitedTCPSite(web.BaseSite):
    """``web.TCPSite`` with a :class:`ConnectionCap`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        limit: int = MAX_CONNECTIONS,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self.host = host
        self.port = port
        self.cap = _cap_of(runner, limit, f"{host}:{port}")

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol] = self.cap
        self._server = await loop.create_server(
            factory, self.host, self.port, backlog=self._backlog, reuse_address=True
        )


class LimitedUnixSite(web.BaseSite):
    """``web.UnixSite`` with a :class:`ConnectionCap`."""

    def __init__(self, runner: web.BaseRunner, path: str, *, limit: int = MAX_CONNECTIONS) -> None:
        super().__init__(runner)
        self.path = path
        self.cap = _cap_of(runner, limit, path)

    @property
    def name(self) -> str:
        return f"http://unix:{self.path}:"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol] = self.cap
        self._server = await loop.create_unix_server(factory, self.path, backlog=self._backlog)
