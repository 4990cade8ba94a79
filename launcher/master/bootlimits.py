"""How fast new MACs may become pending nodes: token buckets per source address and overall.

Every ``GET /boot/MAC.ipxe`` of an unknown MAC would otherwise write a node row,
so anyone on the cluster network could fill the database (and ``beoctl node
list --pending``) with made-up MACs. A real machine makes one pending node per
boot NIC, once; a rack powered on makes many at once, each from its own
address. So each source address has a small bucket and all of them share a
larger one; the row count itself is bounded by ``[boot] max_pending``
(:func:`launcher.master.bootnodes.pending_node`). The buckets live in memory:
a master restart refills them, which costs an attacker a restart of the master.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from launcher.master.tokenbucket import TokenBucket

#: Source addresses whose buckets are remembered; the least recently used is
#: forgotten beyond it (a forgotten address starts full again, the overall
#: bucket still holds).
MAX_ADDRESSES = 4096


@dataclass(frozen=True)
class Refusal:
    """Why a new pending node is refused: HTTP ``status``, a message, seconds to wait."""

    status: int
    reason: str
    retry_after_s: int


class PendingGate:
    """Admits new pending nodes at ``per_address`` a minute from one source address and
    ``overall`` a minute from all of them (each a burst of that size). Thread-safe:
    the boot service calls it from its database threads."""

    def __init__(
        self,
        *,
        overall: int,
        per_address: int,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.overall_rate = overall
        self.per_address_rate = per_address
        self.clock = clock
        self.max_addresses = max_addresses
        self._lock = threading.Lock()
        self._all = TokenBucket(overall, overall / 60, clock())
        self._by_address: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, client: str) -> Refusal | None:
        """Take a token for one new pending node from ``client``; None when admitted,
        else why not (nothing is taken then)."""
        with self._lock:
            now = self.clock()
            bucket = self._by_address.pop(client, None)
            if bucket is None:
                bucket = TokenBucket(self.per_address_rate, self.per_address_rate / 60, now)
            self._by_address[client] = bucket  # most recently used last
            while len(self._by_address) > self.max_addresses:
                self._by_address.popitem(last=False)
            if not bucket.available(now):
                return Refusal(
                    429,
                    f"too many new nodes from {client} "
                    f"(at most {self.per_address_rate} a minute from one address)",
                    _seconds(bucket.wait_s(now)),
                )
            if not self._all.available(now):
                return Refusal(
                    503,
                    f"too many new nodes at once (at most {self.overall_rate} a minute)",
                    _seconds(self._all.wait_s(now)),
                )
            bucket.take(now)
            self._all.take(now)
            return None

    def addresses(self) -> int:
        """How many source addresses are remembered (bounded by ``max_addresses``)."""
        with self._lock:
            return len(self._by_address)


def _seconds(wait: float) -> int:
    return max(1, int(wait + 0.999))
