"""Database work held while the state database is away, and done, in order, when it is back.

The master keeps running when its database goes away (a PostgreSQL restart, a
failover, a full disk): node sessions stay up, output is relayed, users are
answered ``503 database unavailable, retry``. What must be written (a job's
end, a node's acceptance, a refusal) is run through :meth:`HeldWrites.run`:
done at once when it can be; otherwise held, with everything after it, and
retried every ``retry_s`` seconds in the order it came, so a job's exits are
never recorded before its start. Each function given must do its database
work before it changes anything in memory (one transaction, then the rest),
so running it again after a failed try is safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from launcher.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

#: Seconds between two tries while the database is away.
RETRY_S = 1.0


class HeldWrites:
    """An ordered queue of database work that waits for the database."""

    def __init__(
        self, *, retry_s: float = RETRY_S, on_drained: Callable[[], None] | None = None
    ) -> None:
        self.retry_s = retry_s
        #: called once everything held is done (the scheduler looks for work then)
        self.on_drained = on_drained
        self._held: deque[tuple[str, Callable[[], None]]] = deque()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._held)

    def run(self, what: str, work: Callable[[], None]) -> bool:
        """Do ``work`` now, or hold it (``what`` names it in the log) when the
        database is away or earlier work is held; whether it was done now."""
        if self._held:
            self._held.append((what, work))
            return False
        try:
            work()
        except DatabaseUnavailable as exc:
            self._held.append((what, work))
            log.warning("%s; holding %s until it is back", exc, what)
            self._task = asyncio.get_running_loop().create_task(self._retry())
            return False
        return True

    def hold(self, what: str, work: Callable[[], None], exc: DatabaseUnavailable) -> None:
        """Hold ``work``, which just failed elsewhere (a database thread) with ``exc``,
        behind anything already held, without trying it again now."""
        self._held.append((what, work))
        if len(self._held) == 1:
            log.warning("%s; holding %s until it is back", exc, what)
            self._task = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        while self._held:
            await asyncio.sleep(self.retry_s)
            done = 0
            while self._held:
                what, work = self._held[0]
                try:
                    work()
                except DatabaseUnavailable:
                    break
                except Exception:  # one broken piece must not hold the rest forever
                    log.exception("held database work failed: %s (dropped)", what)
                self._held.popleft()
                done += 1
            if done:
                log.info("the state database is back: %d held writes done", done)
        if self.on_drained is not None:
            self.on_drained()

    async def stop(self) -> None:
        """Stop retrying (the master is stopping); what is still held is lost."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            if self._held:
                log.error(
                    "stopping with %d database writes held: %s",
                    len(self._held),
                    ", ".join(w for w, _ in self._held),
                )
