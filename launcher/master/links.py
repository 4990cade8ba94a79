"""Outgoing message queues: one writer task per WebSocket keeps messages in order.

The scheduler changes its state synchronously and posts messages; it never awaits
a slow peer. Each peer's queue is drained by one task, so a ``prepare`` is always
on the wire before the ``exec`` and ``release`` that follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiohttp import web

from launcher.wire import Message, encode

#: WebSocket close code of a session the master drops because the node was silent.
CLOSE_SILENT = 4408
_closing: set[asyncio.Task[bool]] = set()  # kept: the loop holds tasks weakly


@dataclass
class Outbox:
    """Messages for one WebSocket peer, sent in the order posted."""

    ws: web.WebSocketResponse
    #: messages, or their text already encoded (wire.encode_sharing)
    queue: asyncio.Queue[Message | str | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def post(self, message: Message | str) -> None:
        self.queue.put_nowait(message)

    async def _run(self) -> None:
        while (message := await self.queue.get()) is not None:
            if self.ws.closed:
                return
            try:
                await self.ws.send_str(message if isinstance(message, str) else encode(message))
            except (ConnectionError, RuntimeError):
                return  # the peer went away; its reader notices and cleans up

    async def stop(self) -> None:
        """Send what is queued, then stop the writer."""
        self.queue.put_nowait(None)
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class NodeLink:
    """A connected node agent: its name, row id, and the addresses of its connection."""

    name: str
    node_id: int
    #: the master's own address on this connection: where the node reached us
    local_address: str
    peer_address: str
    outbox: Outbox
    #: the port of the node's peer object service (its hello), on ``peer_address``
    peer_port: int | None = None

    def peer_url(self) -> str | None:
        """``http://address:port`` of the node's peer object service, or None."""
        if self.peer_port is None or not 0 < self.peer_port < 65536 or not self.peer_address:
            return None
        host = f"[{self.peer_address}]" if ":" in self.peer_address else self.peer_address
        return f"http://{host}:{self.peer_port}"

    def post(self, message: Message | str) -> None:
        """Send ``message`` (or its text, already encoded) after what was posted before."""
        self.outbox.post(message)

    def close(self, why: str) -> None:
        """Drop the session (code CLOSE_SILENT): the agent reconnects if it can."""
        task = asyncio.get_running_loop().create_task(
            self.outbox.ws.close(code=CLOSE_SILENT, message=why.encode()[:120])
        )
        _closing.add(task)
        task.add_done_callback(_closing.discard)
