"""How fast one node connection's control messages are read: a token bucket.

The control service takes one token per message a node sends. While the bucket
is empty it stops reading that node's WebSocket until a token is back: aiohttp
then stops reading the socket once 128 KiB wait in its buffer, the kernel's
buffers fill, and the node's sends block (TCP backpressure). A real agent
blocked this way reads its tasks' pipes less often and sends fewer, fuller
``output`` messages (64 KiB each, launcher.node.jobs.OUTPUT_CHUNK), so the
bytes it relays hardly change; a broken or hostile node sending small messages
is held to the rate. Other nodes' sessions are not touched.

The numbers (docs/limits.md): a real agent sends a heartbeat every 5 s, fill
progress at most every 0.2 s per job, and ``output`` as its tasks print. The
agent's own ceiling, measured for ``yes | head -c 100M`` (read in 64 KiB
pipe reads, wrapped and JSON-encoded as it sends them, no network:
bench/agent_output.py), was 3,600 to 4,400 messages a second (220 to 260
MB/s; 6,900 counting the encoding alone) on the development machine, with
other work running: :data:`RATE_PER_S`
is above what one agent can send, and a two-second :data:`BURST` absorbs a
node's backlog after a reconnection.

Pure bookkeeping: no sockets, no clock of its own (callers pass ``now``).
"""

from __future__ import annotations

from dataclasses import dataclass

from launcher.master.tokenbucket import TokenBucket

#: Messages a second one node connection may send, sustained.
RATE_PER_S = 8000.0
#: Seconds of the rate a node may send at once (after being quiet).
BURST_S = 2.0
#: Seconds a node must have been held back in one episode before it is told and
#: the master logs it: a moment's burst is slowed silently.
REPORT_AFTER_S = 1.0


@dataclass
class Episode:
    """One stretch of a node being held back, from its first wait until its
    bucket is full again."""

    started: float
    waited_s: float = 0.0
    messages: int = 0
    reported: bool = False


class NodePace:
    """One node connection's bucket, and its episodes of being held back.

    :meth:`take` per message says how long to wait; :meth:`report` and
    :meth:`ended` say, once per episode, when to tell the node and the log."""

    def __init__(
        self,
        now: float,
        rate: float = RATE_PER_S,
        burst_s: float = BURST_S,
        report_after_s: float = REPORT_AFTER_S,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"a message rate must be above 0 a second, got {rate}")
        self.rate = rate
        self.bucket = TokenBucket(max(1.0, rate * burst_s), rate, now)
        self.report_after_s = report_after_s
        self.episode: Episode | None = None
        self._ended: Episode | None = None

    def take(self, now: float) -> float:
        """Seconds to wait before handling the message just read (its token is
        taken as of then, so a caller that waits is held to the rate)."""
        if self.episode is not None and self.bucket.full(now):
            self._ended, self.episode = self.episode, None
        wait = self.bucket.wait_s(now)
        self.bucket.take(now + wait)
        if wait > 0:
            if self.episode is None:
                self.episode = Episode(now)
            self.episode.waited_s += wait
            self.episode.messages += 1
        return wait

    def report(self) -> Episode | None:
        """The current episode, once, when the node has been held back for
        ``report_after_s`` in it; else None."""
        episode = self.episode
        if episode is None or episode.reported or episode.waited_s < self.report_after_s:
            return None
        episode.reported = True
        return episode

    def ended(self) -> Episode | None:
        """A reported episode that has just ended (once); else None."""
        episode, self._ended = self._ended, None
        return episode if episode is not None and episode.reported else None
