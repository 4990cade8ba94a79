"""Say a repeated thing once per interval: iPXE retries every 5 s, an attacker faster.

A refusal the boot service repeats for the same key (a node and a reason, a
source address) is logged, and recorded as a node event, the first time and
then at most once per ``interval_s``, with how many were left unsaid since.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

#: Keys remembered; the least recently said is forgotten beyond it.
MAX_KEYS = 4096
#: Seconds between two lines for the same key.
INTERVAL_S = 600.0


class Notices:
    """Which keys were said when, and how often they were kept quiet since. Thread-safe."""

    def __init__(
        self,
        interval_s: float = INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._said: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def due(self, key: Hashable) -> int | None:
        """None when ``key`` was said less than ``interval_s`` ago (counted as kept
        quiet); otherwise how many times it was kept quiet since it was last said
        (0 the first time), and it counts as said now."""
        with self._lock:
            now = self.clock()
            last = self._said.pop(key, None)
            if last is not None and now - last[0] < self.interval_s:
                self._said[key] = (last[0], last[1] + 1)
                return None
            self._said[key] = (now, 0)
            while len(self._said) > self.max_keys:
                self._said.popitem(last=False)
            return last[1] if last is not None else 0


def since(quiet: int) -> str:
    """`` (and N more like it since the last line)`` when ``quiet``, else nothing."""
    return f" ({quiet} more like it since the last line)" if quiet else ""
