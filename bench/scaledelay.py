"""Heartbeat recording delays from send times and polled ``nodes.last_seen`` (bench.scale).

A node's messages are handled in order, so when a poll finds ``last_seen`` at
or after a heartbeat's send time, that heartbeat was recorded no later than
``last_seen``: its delay is at most ``last_seen - sent`` (exact unless a later
heartbeat of the node was also recorded before that poll).
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Delays:
    """Seconds from send to recorded, over the heartbeats sent in the window."""

    count: int
    p99: float  # by the master's own stamp (last_seen: when it received it)
    p99_seen: float  # by when a poll first saw it committed (the recorded delay)
    max: float
    unrecorded: int  # still not recorded at the window's end (counted with their age)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def heartbeat_delays(
    record: Path,
    polls: list[tuple[float, dict[str, float]]],
    start: float,
    end: float,
    settle_s: float = 1.0,
) -> Delays:
    """Delays of the heartbeats in ``record`` (simnodes ``--record``) sent from
    ``start`` until ``settle_s`` before the last poll, found in ``polls`` ((poll
    time, name -> last_seen), oldest first). One not recorded by the last poll
    counts with its age at ``end``: so a delay past ``settle_s`` is never lost."""
    beats: dict[str, list[float]] = json.loads(record.read_text())["beats"]
    times = [at for at, _ in polls]
    stamped: list[float] = []
    seen: list[float] = []
    unrecorded = 0
    for name, sent_times in beats.items():
        for sent in sent_times:
            if not times or not start <= sent <= times[-1] - settle_s:
                continue
            i = bisect.bisect_left(times, sent)  # polls after the send
            for at, last in polls[i:]:
                recorded = last.get(name)
                if recorded is not None and recorded >= sent:
                    stamped.append(recorded - sent)
                    seen.append(at - sent)
                    break
            else:
                unrecorded += 1
                stamped.append(end - sent)
                seen.append(end - sent)
    return Delays(
        count=len(stamped),
        p99=percentile(stamped, 99),
        p99_seen=percentile(seen, 99),
        max=max(stamped, default=math.nan),
        unrecorded=unrecorded,
    )
