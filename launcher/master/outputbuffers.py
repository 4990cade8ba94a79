"""A job's output as the master holds it: bounded in bytes, never slowing the job.

Two buffers per job (docs/limits.md):

- :class:`History`: the newest :data:`HISTORY_BYTES` of the job's messages, for
  a watcher that subscribes late (beosub submits, then opens the stream; or it
  reconnects). Older messages are dropped first; a late watcher is told how
  many bytes of output it missed.
- :class:`WatchQueue`: what one watcher (a beosub stream, a batch job's output
  files) has not taken yet, at most :data:`WATCHER_BYTES`. Past that the
  watcher is too slow (a terminal stopped with Ctrl-S, a pager left open): the
  output waiting for it is dropped, it skips ahead to what comes next, and it
  reads one ``error`` message "output dropped: N bytes, you were too slow"
  where the output was. ``exited``, ``notice`` and ``done`` are never dropped.

A message is counted as its base64 payload (what the master holds) plus
:data:`MESSAGE_OVERHEAD` for the object around it. Publishing never waits, so a
slow watcher never slows or fails the job; a job's buffers cost at most
HISTORY_BYTES plus WATCHER_BYTES per watcher (the messages are shared).
"""

from __future__ import annotations

import asyncio
from collections import deque

from launcher.wire import Error, Message, Output, Progress

#: Bytes of messages kept per job for late watchers (4 MiB: the gap between
#: beosub's submit and its stream opening is milliseconds; this covers seconds
#: of a fast printer, and a reconnecting beosub).
HISTORY_BYTES = 4 << 20
#: Bytes of messages one watcher may leave untaken before it is skipped ahead
#: (8 MiB: two seconds of a terminal at 4 MB/s, far more than a working one
#: lags; 1,000 watchers cost at most 8 GiB, one stopped watcher 8 MiB).
WATCHER_BYTES = 8 << 20
#: Bytes counted per message besides an output's payload (the dataclass, its
#: fields and the queue's slot: about 200 bytes in CPython 3.11, rounded up).
MESSAGE_OVERHEAD = 256


def held_bytes(message: Message) -> int:
    """What the master is counted as holding for ``message``."""
    if isinstance(message, Output):
        return len(message.data) + MESSAGE_OVERHEAD
    return MESSAGE_OVERHEAD


def payload_bytes(message: Message) -> int:
    """Bytes of task output in ``message`` (an ``output``'s decoded payload; else 0)."""
    if not isinstance(message, Output):
        return 0
    return len(message.data) * 3 // 4 - message.data[-2:].count("=")


def _droppable(message: Message) -> bool:
    """Output and fill progress: a watcher can do without them; the rest it cannot."""
    return isinstance(message, Output | Progress)


class History:
    """The newest messages of one job, at most ``limit`` bytes (:func:`held_bytes`)."""

    def __init__(self, limit: int = HISTORY_BYTES) -> None:
        self.limit = limit
        self.messages: deque[Message] = deque()
        self.bytes = 0
        #: bytes of output dropped from the front
        self.dropped = 0

    def append(self, message: Message) -> None:
        self.messages.append(message)
        self.bytes += held_bytes(message)
        while self.bytes > self.limit and len(self.messages) > 1:
            old = self.messages.popleft()
            self.bytes -= held_bytes(old)
            self.dropped += payload_bytes(old)

    def replay(self) -> list[Message]:
        """What a watcher subscribing now gets first: the kept messages, after a
        line saying how much output came before them when some was dropped."""
        kept = list(self.messages)
        if not self.dropped:
            return kept
        note = Error(
            f"output dropped: {self.dropped} bytes, the job's earliest; the master keeps"
            f" the last {self.limit >> 20} MiB of a job's output for watchers that come late"
        )
        return [note, *kept]


class WatchQueue(asyncio.Queue[Message]):
    """An unbounded-looking queue (``put_nowait`` never raises or waits) that holds
    at most ``limit`` bytes: past that its output and progress are dropped and
    one ``error`` message says how many bytes, where the first dropped one was."""

    def __init__(self, limit: int = WATCHER_BYTES) -> None:
        self.limit = limit
        self.bytes = 0
        #: bytes of output dropped so far (all episodes)
        self.dropped = 0
        self._note: Error | None = None
        self._note_bytes = 0
        super().__init__()

    def _init(self, maxsize: int) -> None:
        self._queue: deque[Message] = deque()

    def _put(self, item: Message) -> None:
        self._queue.append(item)
        self.bytes += held_bytes(item)
        if self.bytes > self.limit:
            self._skip_ahead()

    def _get(self) -> Message:
        item = self._queue.popleft()
        self.bytes -= held_bytes(item)
        if item is self._note:
            self._note = None
        return item

    def _skip_ahead(self) -> None:
        """Drop every output and progress queued; one note stands where the first was
        (a note not yet taken is merged into the new one)."""
        kept: deque[Message] = deque()
        at: int | None = None
        dropped = self._note_bytes if self._note is not None else 0
        for message in self._queue:
            if message is self._note or _droppable(message):
                if at is None:
                    at = len(kept)
                if message is not self._note:
                    dropped += payload_bytes(message)
                    self.dropped += payload_bytes(message)
                continue
            kept.append(message)
        self._note = Error(
            f"output dropped: {dropped} bytes, you were too slow (the master holds at most"
            f" {self.limit >> 20} MiB of output for each watcher)"
        )
        self._note_bytes = dropped
        kept.insert(at if at is not None else len(kept), self._note)
        self._queue = kept
        self.bytes = sum(held_bytes(m) for m in kept)
