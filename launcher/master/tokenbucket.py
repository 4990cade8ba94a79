"""A token bucket: what the boot service's pending-node gate (bootlimits.py) and the
control service's per-node message rate (noderate.py) both count with.

No clock of its own: callers pass ``now`` (``time.monotonic`` or the loop's time).
"""

from __future__ import annotations


class TokenBucket:
    """``capacity`` tokens, refilled at ``per_s`` tokens a second; not thread-safe."""

    def __init__(self, capacity: float, per_s: float, now: float) -> None:
        self.capacity = capacity
        self.per_s = per_s
        self.tokens = capacity
        self.at = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_s)
        self.at = now

    def available(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1

    def wait_s(self, now: float) -> float:
        """Seconds until a token is there (0 when one is)."""
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.per_s)

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled to its capacity."""
        self._refill(now)
        return self.tokens >= self.capacity
