"""The scheduler's database work: in order, off the event loop, held while the database is away.

A job's start, a node's exits, a job's end, a refusal, a loss: the scheduler
writes each through :meth:`HeldWrites.run`, which runs the database part in a
database thread (:mod:`launcher.master.dbwork`) and then, back on the event
loop, what follows from it (posting ``exec`` or ``release``, telling the
watchers). One lane, in the order given, so a job's exits are never recorded
before its start nor its start after its end; the event loop never waits for
the database, so heartbeats and output keep flowing during a slow commit.

The master keeps running when its database goes away (a PostgreSQL restart, a
failover, a full disk): node sessions stay up, output is relayed, users are
answered ``503 database unavailable, retry``. The lane then holds what waits,
trying the first piece again every ``retry_s`` seconds. So a piece's database
part must take what it needs as arguments (a snapshot made on the loop), touch
nothing but the database, and be one transaction: running it again after a
failed try is safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from launcher.master.dbwork import DbWork

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The lane's key among DbWork's (node names are the others').
LANE = "scheduler:"


class HeldWrites:
    """One ordered lane of database work (DbWork's), with what follows each piece."""

    def __init__(self, db: DbWork, *, on_drained: Callable[[], None] | None = None) -> None:
        self.db = db
        #: called once everything held through an outage is done (the scheduler
        #: looks for work then)
        self.on_drained = on_drained
        self._recoveries = 0  # DbWork's count for the lane when last drained

    def __len__(self) -> int:
        return self.db.pending(LANE)

    @property
    def away(self) -> bool:
        """The database is away: the lane's first piece waits for it."""
        return LANE in self.db.away

    def run(
        self,
        what: str,
        work: Callable[[], T],
        then: Callable[[T], None] | None = None,
        *,
        failed: Callable[[Exception], None] | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``work`` (a database thread, after everything queued before it;
        ``what`` names it in the log), then ``then(its answer)`` on the event loop.
        When ``work`` raises anything but DatabaseUnavailable the error is logged
        and ``failed(error)`` is called instead of ``then``. The future returned
        is done once ``work`` is; awaiting it is optional."""
        done = self.db.post(LANE, what, work)
        done.add_done_callback(lambda future: self._follow(what, future, then, failed))
        return done

    def _follow(
        self,
        what: str,
        future: asyncio.Future[Any],
        then: Callable[[Any], None] | None,
        failed: Callable[[Exception], None] | None,
    ) -> None:
        try:
            error = None if future.cancelled() else future.exception()
            if isinstance(error, Exception):
                if failed is not None:
                    failed(error)
            elif error is None and not future.cancelled() and then is not None:
                then(future.result())
        except Exception:  # the lane goes on with the next piece
            log.exception("after %s", what)
        recoveries = self.db.recoveries[LANE]
        if recoveries != self._recoveries and not len(self):
            self._recoveries = recoveries
            if self.on_drained is not None:
                self.on_drained()
