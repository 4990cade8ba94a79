"""What a node tells the master about itself: cache usage, and the heartbeat."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import psutil

from cachefs.cache import CacheUsage
from launcher import wire


def cache_document(usage: CacheUsage) -> dict[str, Any]:
    """The ``cache`` figures of ``hello`` and ``heartbeat`` (bytes and object counts)."""
    return {
        "bytes_used": usage.bytes_used,
        "budget": usage.budget_bytes,
        "objects": usage.objects,
        "pinned": usage.pinned_objects,
        "pinned_bytes": usage.pinned_bytes,
    }


def heartbeat(usage: CacheUsage, procs: Iterable[dict[str, Any]]) -> wire.Heartbeat:
    """A heartbeat: load averages (1, 5, 15 min), memory (bytes), the cache, and
    ``procs`` (one row per job process: job, task, pid, user, state, cpu, rss, cmd)."""
    memory = psutil.virtual_memory()
    return wire.Heartbeat(
        load=[float(x) for x in os.getloadavg()],
        memory={"total": int(memory.total), "available": int(memory.available)},
        cache=cache_document(usage),
        procs=list(procs),
    )
