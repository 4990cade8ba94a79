"""The log service: UDP syslog datagrams (RFC 3164, busybox ``syslogd -R``) stored as events.

Each datagram is one line ``<PRI>message``; the severity (PRI mod 8) picks the
event level. The sender is matched to a node by source address
(``nodes.address``, set when its agent says hello); a datagram from an address
no node has is kept too, with the address in the message. UDP carries no
credential, so these events are what a host on the cluster network said, not
proof of which node said it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from sqlalchemy import Engine, select

from launcher.errors import StateError
from launcher.state.db import transaction
from launcher.state.models import Node
from launcher.state.record import record_event

log = logging.getLogger(__name__)
_PRI = re.compile(rb"<(\d{1,3})>")
#: syslog severities 0-7 (emerg .. debug) -> event levels
_LEVELS = ("error", "error", "error", "error", "warning", "info", "info", "debug")
#: Longest message kept; a syslog datagram is at most 1024 bytes by RFC 3164 but
#: busybox sends longer ones.
MAX_MESSAGE = 4096


def parse(datagram: bytes) -> tuple[str, str]:
    """``(level, message)`` of one syslog datagram; no PRI means ``info`` (user.notice)."""
    match = _PRI.match(datagram)
    level = "info"
    body = datagram
    if match is not None and int(match.group(1)) <= 191:
        level = _LEVELS[int(match.group(1)) % 8]
        body = datagram[match.end() :]
    text = body.decode("utf-8", "replace").rstrip("\r\n\0")
    return level, text[:MAX_MESSAGE]


class SyslogProtocol(asyncio.DatagramProtocol):
    """Writes one ``events`` row (source ``syslog``) per datagram."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        level, message = parse(data)
        address = str(addr[0])
        try:
            with transaction(self.engine) as session:
                node = session.scalars(select(Node).where(Node.address == address)).first()
                record_event(
                    session,
                    message if node is not None else f"{address}: {message}",
                    level=level,
                    source="syslog",
                    node=node,
                )
        except StateError as exc:
            # UDP logging is lossy by design; a locked database drops the line, not the master.
            log.warning("dropped a log line from %s: %s", address, exc)
