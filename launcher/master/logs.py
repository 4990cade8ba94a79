"""The log service: UDP syslog datagrams (RFC 3164, busybox ``syslogd -R``) stored as events.

Each datagram is one line ``<PRI>message``; the severity (PRI mod 8) picks the
event level. The sender is matched to a node by source address
(``nodes.address``, set when its agent says hello); a datagram from an address
no node has is kept too, with the address in the message. UDP carries no
credential, so these events are what a host on the cluster network said, not
proof of which node said it.

Lines are written in batches, off the event loop (:mod:`launcher.master.dbwork`):
every ``flush_s`` seconds, all lines received since in one transaction, each
with the time it arrived. A node logging fast, or a database that stalls,
never holds up the loop; at most ``bound`` lines wait for the database, and
the ones beyond are dropped and counted in one log line per flush (UDP
logging is lossy by design: the master's memory is not).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from launcher.master.dbwork import DbWork
from launcher.state.base import utcnow
from launcher.state.models import Event, Node

log = logging.getLogger(__name__)
_PRI = re.compile(rb"<(\d{1,3})>")
#: syslog severities 0-7 (emerg .. debug) -> event levels
_LEVELS = ("error", "error", "error", "error", "warning", "info", "info", "debug")
#: Longest message kept; a syslog datagram is at most 1024 bytes by RFC 3164 but
#: busybox sends longer ones.
MAX_MESSAGE = 4096
#: Seconds between two writes of the lines received since (one transaction).
FLUSH_S = 1.0
#: Lines that may wait for the database at once: at MAX_MESSAGE each, 40 MiB
#: at most; a stalled database drops what comes beyond (counted, logged).
MAX_PENDING = 10_000


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


@dataclass(frozen=True)
class Line:
    """One datagram received, waiting to be written."""

    address: str
    level: str
    message: str
    at: datetime


class SyslogProtocol(asyncio.DatagramProtocol):
    """Keeps each datagram as a :class:`Line`; :meth:`flush_forever` writes them
    as ``events`` rows (source ``syslog``)."""

    def __init__(self, db: DbWork, *, flush_s: float = FLUSH_S, bound: int = MAX_PENDING) -> None:
        self.db = db
        self.flush_s = flush_s
        self.bound = bound
        self.pending: list[Line] = []
        #: lines dropped since the last flush because ``bound`` were waiting
        self.dropped = 0
        #: lines written, and dropped (beyond the bound or by a failed write), in all
        self.written = 0
        self.lost = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(self.pending) >= self.bound:
            self.dropped += 1
            return
        level, message = parse(data)
        self.pending.append(Line(str(addr[0]), level, message, utcnow()))

    async def flush_forever(self) -> None:
        """Write the lines received every ``flush_s`` seconds until cancelled
        (then the last ones, if the database answers)."""
        try:
            while True:
                await asyncio.sleep(self.flush_s)
                await self.flush()
        finally:
            if self.pending:
                await asyncio.shield(self.flush())  # it logs what it cannot write

    async def flush(self) -> None:
        """Write the lines received since the last flush, in one transaction; a
        write that fails drops them (logged with the count)."""
        if self.dropped:
            log.warning(
                "dropped %d log lines: %d were waiting for the state database",
                self.dropped,
                self.bound,
            )
            self.lost += self.dropped
            self.dropped = 0
        if not self.pending:
            return
        lines, self.pending = self.pending, []
        try:
            await self.db.write(functools.partial(_record_lines, lines))
        except Exception as exc:  # never stop flushing: the next batch may go through
            self.lost += len(lines)
            log.warning("dropped %d log lines (from %s...): %s", len(lines), lines[0].address, exc)
            return
        self.written += len(lines)


def _record_lines(lines: list[Line], session: Session) -> None:
    """One ``events`` row per line (one multi-row insert), with its node when its
    address is a node's."""
    addresses = {line.address for line in lines}
    nodes: dict[str | None, int] = {}
    for address, node_id in session.execute(
        select(Node.address, Node.id).where(Node.address.in_(addresses)).order_by(Node.id)
    ):
        nodes.setdefault(address, node_id)  # two rows of one address: the first, as before
    session.execute(
        insert(Event),
        [
            {
                "time": line.at,
                "level": line.level,
                "source": "syslog",
                "node_id": nodes.get(line.address),
                "message": line.message
                if line.address in nodes
                else f"{line.address}: {line.message}",
            }
            for line in lines
        ],
    )
