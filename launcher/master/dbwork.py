"""The master's database work, done off its event loop.

One event loop serves every node WebSocket, heartbeat and output relay; a
query that waits (a PostgreSQL fsync, SQLite's write lock held by a CLI or a
Slurm prolog for up to its 30 s busy timeout) must not stop them. Work given
here runs in a small pool of threads, each call in its own Session opened in
the worker thread (a Session is never shared between threads):

- ``await db.read(fn)`` / ``await db.write(fn)``: ``fn(session)`` in one
  transaction, its answer returned to the caller; errors (DatabaseUnavailable,
  StateError) raised in the caller as :func:`launcher.state.db.transaction`
  raises them.
- ``await db.run(fn, *args)``: any blocking function that opens its own
  transactions (existing code written for a thread).
- ``db.post(key, what, fn)``: in order per ``key``: each key's work runs one
  at a time in the order posted; while the database is away it is retried
  every ``retry_s`` with what came after it held behind it. The scheduler's
  lane (:mod:`launcher.master.heldwrites`) is one key.

Each call's time in its thread (the query, not the wait for a free thread)
goes to ``timing(kind, seconds)`` when given: the master's
``beolaunch_db_query_seconds`` (launcher.master.metrics).

A few threads are enough: SQLite takes one writer at a time anyway, and
PostgreSQL gains little past a handful of concurrent master transactions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from launcher.errors import DatabaseUnavailable
from launcher.state.db import transaction

log = logging.getLogger(__name__)

T = TypeVar("T")

#: (kind: read, write, run or post; seconds) -> None, called in the database thread
Timing = Callable[[str, float], None]

#: Worker threads for database work.
DB_THREADS = 4
#: Seconds between two tries of posted work while the database is away.
RETRY_S = 1.0
#: Seconds :meth:`DbWork.close` waits for posted work still queued.
CLOSE_WAIT_S = 5.0


class DbWork:
    """A bounded pool of database threads and ordered lanes of posted work."""

    def __init__(
        self,
        engine: Engine,
        *,
        threads: int = DB_THREADS,
        retry_s: float = RETRY_S,
        timing: Timing | None = None,
    ) -> None:
        self.engine = engine
        self.retry_s = retry_s
        self.timing = timing
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="beolaunch-db")
        self._lanes: dict[str, deque[tuple[str, Callable[[], Any], asyncio.Future[Any]]]] = {}
        #: keys whose first posted work waits for the database to come back
        self.away: set[str] = set()
        #: key -> how many times its work went on after the database came back
        self.recoveries: Counter[str] = Counter()
        self._workers: dict[str, asyncio.Task[None]] = {}

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a database thread; its answer, or what it raised."""
        return await self._call("run", functools.partial(fn, *args))

    async def read(self, fn: Callable[[Session], T]) -> T:
        """``fn(session)`` in a read-only transaction in a database thread."""
        return await self._call("read", functools.partial(self._in_transaction, fn, True))

    async def write(self, fn: Callable[[Session], T]) -> T:
        """``fn(session)`` in one write transaction in a database thread, committed
        when it returns."""
        return await self._call("write", functools.partial(self._in_transaction, fn, False))

    async def _call(self, kind: str, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        if self.timing is None:
            return await loop.run_in_executor(self._pool, fn)
        return await loop.run_in_executor(self._pool, self._timed, kind, fn)

    def _timed(self, kind: str, fn: Callable[[], T]) -> T:
        """In the database thread: ``fn()``, its time (raised or not) to :attr:`timing`."""
        start = time.perf_counter()
        try:
            return fn()
        finally:
            if self.timing is not None:
                self.timing(kind, time.perf_counter() - start)

    def _in_transaction(self, fn: Callable[[Session], T], readonly: bool) -> T:
        with transaction(self.engine, readonly=readonly) as session:
            return fn(session)

    def post(self, key: str, what: str, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` in a database thread after everything posted before under
        ``key``; ``what`` names it in the log. ``fn`` must be safe to run again after
        it raised DatabaseUnavailable (one transaction). The future returned holds
        its answer once it ran, or the error it was dropped for (logged);
        awaiting it is optional."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        done.add_done_callback(_retrieved)
        lane = self._lanes.setdefault(key, deque())
        lane.append((what, fn, done))
        if key not in self._workers:
            self._workers[key] = loop.create_task(self._drain(key))
        return done

    def pending(self, key: str) -> int:
        """How much posted work under ``key`` is not done yet."""
        return len(self._lanes.get(key, ()))

    async def _drain(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                what, fn, done = lane[0]
                try:
                    answer = await self._call("post", fn)
                except DatabaseUnavailable as exc:
                    if key not in self.away:
                        log.warning("%s; holding %s (and what follows) until it is back", exc, what)
                        self.away.add(key)
                    await asyncio.sleep(self.retry_s)
                    continue
                except Exception as exc:  # one broken piece must not hold the rest forever
                    log.exception("database work failed: %s (dropped)", what)
                    lane.popleft()
                    if not done.done():
                        done.set_exception(exc)
                    continue
                lane.popleft()
                if key in self.away:
                    self.away.discard(key)
                    self.recoveries[key] += 1
                    log.info("the state database is back: %s done", what)
                if not done.done():
                    done.set_result(answer)
        finally:
            del self._workers[key]
            if not lane:
                del self._lanes[key]

    async def close(self, *, wait_s: float = CLOSE_WAIT_S) -> None:
        """Let posted work finish (up to ``wait_s``), then stop the threads."""
        workers = list(self._workers.values())
        if workers:
            _done, late = await asyncio.wait(workers, timeout=wait_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                log.error(
                    "stopping with database work not done: %s",
                    ", ".join(w for lane in self._lanes.values() for w, _, _ in lane),
                )
        # A thread still in a query is not interrupted: wait for it (bounded by
        # the busy timeout), so the engine is disposed after its last use.
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._pool.shutdown, wait=True, cancel_futures=True)
        )


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a posted piece's error seen (it was logged when it was dropped)."""
    if not future.cancelled():
        future.exception()
