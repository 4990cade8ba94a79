"""The control service: node agents' WebSocket sessions at ``/node``.

Trust model: the only credential is the bearer token of the upgrade request,
checked against ``nodes.token_sha256`` (constant time, :mod:`launcher.master.tokens`).
A wrong or missing token is closed with 4401 before anything is read and
changes no node's state. After that the session must start with ``hello`` for
the same node name; every later message is decoded against the node-to-master
allow-list, and one that is not allowed is answered ``error`` and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import WSMsgType, hdrs, web
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from launcher.errors import BeolaunchError, DatabaseUnavailable
from launcher.master.dbwork import DbWork
from launcher.master.links import NodeLink, Outbox
from launcher.master.nodehealth import health_drained, record_health
from launcher.master.noderate import RATE_PER_S, NodePace
from launcher.master.scheduler import Scheduler
from launcher.master.tokens import issue_token, node_for_token
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.models import Node
from launcher.state.nodes import report_hardware
from launcher.state.record import record_event
from launcher.wire import (
    NODE_TO_MASTER,
    Error,
    Health,
    Heartbeat,
    Hello,
    Message,
    WireError,
    decode,
)

__all__ = ["NodeRegistry", "control_app", "issue_token"]

log = logging.getLogger(__name__)

#: Connections the control service holds at once. Every node keeps one
#: WebSocket open, so the 512 every other listening site allows
#: (httpguard.MAX_CONNECTIONS) turned node 513 of a 1,000-node cluster away with
#: 503 (bench.scale, issue 15). One descriptor each; the master raises
#: RLIMIT_NOFILE to its hard limit at start (launcher/limits.py).
CONTROL_CONNECTIONS = 8192

#: WebSocket close codes (4000-4999 are the application's).
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_HELLO = 4400
CLOSE_REPLACED = 4409
#: The database is away: the agent keeps what it holds and connects again.
CLOSE_TRY_LATER = 4503
#: Seconds a node may stay away before it is marked down (an agent restart or a
#: network blip should not fail a job being prepared).
DISCONNECT_GRACE_S = 3.0
#: Seconds a node has to send ``hello`` after connecting.
HELLO_TIMEOUT_S = 30.0
#: Seconds between two writes of the heartbeats received since: all of them in
#: one transaction, so 1,000 nodes beating every 5 s cost two transactions a
#: second of about 100 row updates, not 200 transactions a second. Half a
#: second keeps a heartbeat's way into the database under 1 s (issue 15's goal
#: at 1,000 nodes; bench/scale.py measures it); at 1 s its p99 was 1.0-1.4 s.
HEARTBEAT_FLUSH_S = 0.5


@dataclass
class NodeView:
    """What the last hello/heartbeat said about a node (for ``beostat``)."""

    load: list[float] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    procs: list[dict[str, Any]] = field(default_factory=list)
    #: when the hello or heartbeat came (UTC); the database's ``last_seen`` lags it
    #: by up to HEARTBEAT_FLUSH_S, so this is what "last heard" reads
    heard: datetime | None = None


class NodeRegistry:
    """Connected nodes (``links``), their last reports (``views``) and their sessions."""

    def __init__(
        self,
        db: DbWork,
        *,
        scheduler: Scheduler | None = None,
        links: dict[str, NodeLink] | None = None,
        grace_s: float = DISCONNECT_GRACE_S,
        flush_s: float = HEARTBEAT_FLUSH_S,
        message_rate: float = RATE_PER_S,
        on_up: Callable[[str], None] | None = None,
    ) -> None:
        """``db``: where database work runs (off the event loop); ``links``: the
        dict the registry keeps connected nodes in (the scheduler's, which posts
        to them); ``scheduler`` None: nodes connect, no job runs;
        ``message_rate``: messages a second each node may send (noderate.py);
        ``on_up``: told each node's name as its agent registers (metrics.Metrics.node_up)."""
        self.db = db
        self.message_rate = message_rate
        self.engine = db.engine
        self.grace_s = grace_s
        self.flush_s = flush_s
        #: node id -> when its latest heartbeat not yet written came
        self._beats: dict[int, datetime] = {}
        self.links: dict[str, NodeLink] = links if links is not None else {}
        self.views: dict[str, NodeView] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self._lost: dict[str, asyncio.Task[None]] = {}
        #: node -> its down record being written (a reconnect waits for it)
        self._downing: dict[str, asyncio.Future[None]] = {}
        self.scheduler = scheduler
        self.on_up = on_up

    def reset(self) -> None:
        """At master start no agent is connected yet: nodes that were ``up`` are ``down``
        until their agents reconnect (``busy`` ones keep their jobs' claim)."""
        with transaction(self.engine) as session:
            for node in session.scalars(select(Node).where(Node.state == "up")):
                node.state = "down"
                node.state_reason = "waiting for the agent to reconnect"

    async def close_all(self) -> None:
        for task in self._lost.values():
            task.cancel()
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"master shutting down")

    def _went_away(self, name: str) -> None:
        async def later() -> None:
            await asyncio.sleep(self.grace_s)
            if name in self.links:
                return
            # Shielded: a reconnect cancels this task, and then waits for this
            # write (``_downing``) so the node's up record comes after it.
            write = asyncio.ensure_future(
                self._db(name, f"node {name} down", lambda: self._record_down(name))
            )
            self._downing[name] = write
            try:
                await asyncio.shield(write)
            finally:
                if self._downing.get(name) is write:
                    del self._downing[name]
            log.info("node %s down: its agent stayed away %.1f s", name, self.grace_s)
            self.views.pop(name, None)
            if self.scheduler is not None:
                self.scheduler.on_node_lost(name)

        self._lost[name] = asyncio.get_running_loop().create_task(later())

    def _record_down(self, name: str) -> None:
        if name in self.links:
            return  # back meanwhile (this waited for the database)
        with transaction(self.engine) as session:
            node = session.scalars(select(Node).where(Node.name == name)).first()
            if node is not None and node.state != "drained":
                node.state = "down"
                node.state_reason = "agent disconnected"
                record_event(session, f"node {name} down: agent disconnected", node=node)

    async def _db(self, name: str, what: str, work: Callable[[], None]) -> None:
        """A node's up or down record, in a database thread after that node's
        earlier ones; behind the scheduler's held writes while the database is
        away (a node's loss held there is written before its return). Returns
        once written, or held."""
        held = self.scheduler.held if self.scheduler is not None else None
        if held is not None and held.away:
            held.run(what, work)
            return
        try:
            await self.db.run(work)  # fails fast while the database is away
        except DatabaseUnavailable as exc:
            if held is None:
                log.warning("%s: %s not recorded", exc, what)
            else:
                held.run(what, work)

    async def session(self, request: web.Request) -> web.StreamResponse:
        """Serve one node agent's WebSocket until it closes."""
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")

        def check(session: Session) -> tuple[str | None, int | None]:
            node = node_for_token(session, token.strip()) if scheme.lower() == "bearer" else None
            return (node.name, node.id) if node is not None else (None, None)

        try:
            name, node_id = await self.db.read(check)
        except DatabaseUnavailable as exc:
            # The agent keeps its tasks' output and exits and tries again.
            log.warning("a node connected but its token cannot be checked: %s", exc)
            await ws.close(code=CLOSE_TRY_LATER, message=b"database unavailable; try again")
            return ws
        if name is None or node_id is None:
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unknown node token")
            return ws
        self.sockets.add(ws)
        try:
            hello = await self._hello(ws, name)
            if hello is None:
                return ws
            transport = request.transport
            sockname = transport.get_extra_info("sockname") if transport else None
            link = NodeLink(
                name,
                node_id,
                local_address=str(sockname[0]) if sockname else "127.0.0.1",
                peer_address=request.remote or "",
                outbox=Outbox(ws),
                peer_port=hello.peer_port,
            )
            await self._register(link, hello)
            try:
                await self._serve(ws, link)
            finally:
                await link.outbox.stop()
                if self.links.get(name) is link:
                    del self.links[name]
                    self._went_away(name)
        finally:
            self.sockets.discard(ws)
        return ws

    async def _hello(self, ws: web.WebSocketResponse, name: str) -> Hello | None:
        try:
            msg = await ws.receive(timeout=HELLO_TIMEOUT_S)
        except TimeoutError:
            await ws.close(code=CLOSE_BAD_HELLO, message=b"no hello")
            return None
        if msg.type != WSMsgType.TEXT:
            await ws.close(code=CLOSE_BAD_HELLO, message=b"expected hello")
            return None
        try:
            hello = decode(msg.data, {Hello.type: Hello})
        except WireError as exc:
            await ws.close(code=CLOSE_BAD_HELLO, message=str(exc).encode()[:120])
            return None
        assert isinstance(hello, Hello)
        if hello.name != name:
            await ws.close(
                code=CLOSE_BAD_HELLO, message=f"this token belongs to {name}".encode()[:120]
            )
            return None
        return hello

    async def _register(self, link: NodeLink, hello: Hello) -> None:
        old = self.links.get(link.name)
        if old is not None:
            await old.outbox.ws.close(code=CLOSE_REPLACED, message=b"replaced by a new session")
        task = self._lost.pop(link.name, None)
        if task is not None:
            task.cancel()
        down = self._downing.get(link.name)
        if down is not None:
            await asyncio.wait([down])
        running = self.scheduler is not None and any(
            link.name in run.nodes for run in self.scheduler.runs.values()
        )
        await self._db(
            link.name, f"node {link.name} up", lambda: self._record_up(link, hello, running)
        )
        log.info("node %s up from %s", link.name, link.peer_address)
        self.views[link.name] = NodeView(cache=dict(hello.cache), heard=utcnow())
        self.links[link.name] = link
        link.outbox.start()
        if self.on_up is not None:
            self.on_up(link.name)
        if self.scheduler is not None:
            self.scheduler.on_hello(link.name, hello.held, hello.jobs)

    def _record_up(self, link: NodeLink, hello: Hello, running: bool) -> None:
        with transaction(self.engine) as session:
            node = session.get_one(Node, link.node_id)
            report_hardware(session, node, hello.hardware)
            node.address = link.peer_address or node.address
            if hello.problems or health_drained(node):
                record_health(session, node, hello.problems, running=running)
            if node.state != "drained":
                node.state = "busy" if running else "up"
                node.state_reason = None
            record_event(session, f"node {link.name} up from {link.peer_address}", node=node)

    async def _serve(self, ws: web.WebSocketResponse, link: NodeLink) -> None:
        loop = asyncio.get_running_loop()
        pace = NodePace(loop.time(), self.message_rate)
        async for msg in ws:
            now = loop.time()
            wait = pace.take(now)
            ended = pace.ended()
            if ended is not None:
                log.info(
                    "node %s is back under its message rate: %d messages were held back"
                    " %.1f s in all over %.1f s",
                    link.name,
                    ended.messages,
                    ended.waited_s,
                    now - ended.started,
                )
            if wait > 0:
                await self._slow_down(link, pace, wait)
            if msg.type != WSMsgType.TEXT:
                continue
            if self.scheduler is not None:
                self.scheduler.silence.heard(link.name)
            try:
                message = decode(msg.data, NODE_TO_MASTER)
            except WireError as exc:
                link.post(Error(str(exc)))
                continue
            if isinstance(message, Heartbeat):
                self._heartbeat(link, message)
            elif isinstance(message, Health):
                await self._health(link, message)
            elif isinstance(message, Hello):
                continue
            elif self.scheduler is not None:
                self._handle(link, message)

    async def _health(self, link: NodeLink, health: Health) -> None:
        """The node's problems changed: drain it with them, or lift its own drain."""
        running = self.scheduler is not None and any(
            link.name in run.nodes for run in self.scheduler.runs.values()
        )
        lifted = False

        def work() -> None:
            nonlocal lifted
            with transaction(self.engine) as session:
                node = session.get_one(Node, link.node_id)
                lifted = record_health(session, node, health.problems, running=running)

        what = "; ".join(health.problems) or "no problems left"
        log.info("node %s health: %s", link.name, what)
        await self._db(link.name, f"node {link.name} health: {what}", work)
        if lifted and self.scheduler is not None:
            self.scheduler.schedule()

    def _handle(self, link: NodeLink, message: Message) -> None:
        """Give a node's message to the scheduler (which has one: see _serve)."""
        assert self.scheduler is not None
        try:
            self.scheduler.on_message(link.name, message)
        except DatabaseUnavailable:
            # No handler reads the database on the loop any more (Slurm
            # admission has its lane, test_offloop.py keeps it so); should
            # one, its message is handled again, in order, once the database answers.
            self.scheduler.held.run(
                f"{message.type} from {link.name}",
                self._ping,
                lambda _: self._handle(link, message),
            )
        except BeolaunchError as exc:
            # One message the state cannot take must not drop the node.
            log.error("node %s: cannot handle its %s: %s", link.name, message.type, exc)
            link.post(Error(f"master could not handle {message.type}: {exc}"))

    def _ping(self) -> None:
        with transaction(self.engine, readonly=True) as session:
            session.execute(select(1))

    async def _slow_down(self, link: NodeLink, pace: NodePace, wait: float) -> None:
        """Stop reading ``link``'s socket for ``wait`` seconds (TCP backpressure);
        tell the node and the log once per episode of being held back."""
        if pace.report() is not None:
            rate = pace.rate
            log.warning(
                "node %s sends more than %.0f control messages a second: reading its"
                " connection at that rate (logged once until it slows down)",
                link.name,
                rate,
            )
            link.post(Error(f"you send more than {rate:.0f} messages a second; read at that rate"))
        await asyncio.sleep(wait)

    def _heartbeat(self, link: NodeLink, beat: Heartbeat) -> None:
        now = utcnow()
        self.views[link.name] = NodeView(
            load=list(beat.load),
            memory=dict(beat.memory),
            cache=dict(beat.cache),
            procs=list(beat.procs),
            heard=now,
        )
        self._beats[link.node_id] = now  # written by flush_forever

    async def flush_forever(self) -> None:
        """Write the heartbeats received every ``flush_s`` seconds (one transaction)
        until cancelled; look for work for the nodes then."""
        try:
            while True:
                await asyncio.sleep(self.flush_s)
                await self.flush()
        finally:
            if self._beats:  # the master is stopping: the last ones too, if quick
                with contextlib.suppress(BeolaunchError):
                    await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Write the heartbeats received since the last flush: each node's
        ``last_seen``, and ``up`` for a connected node an admin resumed."""
        if not self._beats:
            return
        beats, self._beats = self._beats, {}
        connected = {link.node_id for link in self.links.values()}
        # While the database is away last_seen waits for the next flush (the
        # master logged the outage already); "last heard" is in self.views.
        with contextlib.suppress(DatabaseUnavailable):
            await self.db.write(functools.partial(_record_beats, beats, connected))
        if self.scheduler is not None and self.scheduler.queue:
            self.scheduler.schedule()


def _record_beats(beats: dict[int, datetime], connected: set[int], session: Session) -> None:
    """``last_seen`` of each node in ``beats``; ``up`` for those still connected
    that are ``down`` (resumed by an admin while connected)."""
    session.execute(update(Node), [{"id": i, "last_seen": at} for i, at in beats.items()])
    resumed = [i for i in beats if i in connected]
    if resumed:
        session.execute(
            update(Node)
            .where(Node.id.in_(resumed), Node.state == "down")
            .values(state="up", state_reason=None)
        )


def control_app(registry: NodeRegistry) -> web.Application:
    """The control service: ``GET /node`` upgraded to the node WebSocket."""
    app = web.Application()
    app.router.add_get("/node", registry.session)

    async def on_shutdown(_app: web.Application) -> None:
        await registry.close_all()

    app.on_shutdown.append(on_shutdown)
    return app
