"""A job the master is running: which nodes, which task runs where, who watches it.

Pure bookkeeping (no database, no sockets): the scheduler owns the runs and
decides; a :class:`JobRun` answers what it knows about one job.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from launcher.master.outputbuffers import History, WatchQueue
from launcher.wire import FillReport, Message, Prepare, Progress


@dataclass
class JobRun:
    """One job from the moment nodes are chosen until its ``done``."""

    job_id: int
    uid: int
    tasks: int
    #: chosen nodes, sorted by name: task i runs on nodes[i % len(nodes)]
    nodes: list[str]
    state: str = "preparing"  # then "running"
    #: why it is ending, once its end is decided (it may wait for the database)
    ending: str | None = None
    #: each node's prepare, sent again after a damaged store object was repaired
    prepares: dict[str, Prepare] = field(default_factory=dict)
    #: store checks asked for this run (bounded: storerepair.py)
    repairs: int = 0
    #: nodes lost while preparing that free nodes replaced (scheduler._replace)
    replaced: int = 0
    waiting: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    rusage: dict[str, dict[str, float]] = field(default_factory=dict)
    #: each accepting node's fill report, recorded when the last one accepts
    fills: dict[str, FillReport] = field(default_factory=dict)
    #: nodes whose tasks all ended but whose exit is not yet in the database
    unrecorded: list[str] = field(default_factory=list)
    recorded: set[str] = field(default_factory=set)
    watchers: set[asyncio.Queue[Message]] = field(default_factory=set)
    #: the newest messages, bounded in bytes, for watchers still to come
    history: History = field(default_factory=History)
    #: each node's latest fill progress (the status page reads it every tick)
    progress: dict[str, Progress] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {name: i for i, name in enumerate(self.nodes)}

    def swap(self, lost: str, spare: str) -> None:
        """``spare`` takes ``lost``'s place while preparing (no task ran yet, so
        tasks are placed anew over the sorted nodes)."""
        self.nodes = sorted(spare if name == lost else name for name in self.nodes)
        self._index = {name: i for i, name in enumerate(self.nodes)}
        self.fills.pop(lost, None)
        self.waiting.discard(lost)
        self.waiting.add(spare)

    def node_of(self, task: int) -> str:
        return self.nodes[task % len(self.nodes)]

    def tasks_of(self, node: str) -> list[int]:
        i = self._index.get(node)
        return [] if i is None else list(range(i, self.tasks, len(self.nodes)))

    def node_done(self, node: str) -> bool:
        return all(t in self.statuses for t in self.tasks_of(node))

    def node_status(self, node: str) -> int:
        return max((self.statuses[t] for t in self.tasks_of(node)), default=0)

    def done(self) -> bool:
        return len(self.statuses) == self.tasks

    def worst(self) -> int:
        return max(self.statuses.values(), default=0)

    def add_rusage(self, node: str, usage: dict[str, Any]) -> None:
        total = self.rusage.setdefault(node, {"utime": 0.0, "stime": 0.0, "maxrss": 0.0})
        for key in ("utime", "stime"):
            value = usage.get(key)
            if isinstance(value, (int, float)):
                total[key] += float(value)
        maxrss = usage.get("maxrss")
        if isinstance(maxrss, (int, float)):
            total["maxrss"] = max(total["maxrss"], float(maxrss))

    def publish(self, message: Message) -> None:
        """Send to every watcher now and keep it for watchers still to come; never
        waits (a slow watcher is skipped ahead: outputbuffers.py)."""
        self.history.append(message)
        if isinstance(message, Progress) and message.node is not None:
            self.progress[message.node] = message
        for queue in self.watchers:
            queue.put_nowait(message)

    def watch(self) -> asyncio.Queue[Message]:
        """A new watcher's queue (bounded in bytes), the history already in it."""
        queue = WatchQueue()
        for message in self.history.replay():
            queue.put_nowait(message)
        self.watchers.add(queue)
        return queue
