"""What the status page shows live, made once per tick and shared by every browser.

Cost (issue 16): a browser's event stream must not make the master query the
database per browser. :class:`StatusFeed` builds one snapshot per tick (one
database read of the node rows, off the loop through :class:`DbWork`; the rest
from memory: the registry's last heartbeats, the scheduler's runs and their
fill progress), encodes it to JSON once, and hands the same string to every
open stream. With no stream open it does nothing at all. A stream that has not
taken the last snapshot yet gets only the newest (a queue of one): a stalled
browser costs one string, never a backlog.

Everything in a snapshot is what any local user may list (``beostat nodes``,
``beostat jobs``, as ``ps`` shows every process): names, states, figures, job
ids and owners. Job details are on the job page, for the owner or root.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pwd
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from launcher.master.dbwork import DbWork
from launcher.master.jobs import JobRun
from launcher.master.nodes import NodeView
from launcher.state.nodes import node_states
from launcher.wire import Done

log = logging.getLogger(__name__)

#: Seconds between two snapshots while a stream is open: fill progress moves in
#: seconds, a heartbeat comes every 5 s.
TICK_S = 1.0
#: Seconds a job stays on the page after it ended (with its exit status): a job
#: that ends between two ticks would otherwise vanish with its bars short of full.
RECENT_S = 10.0

NodeRow = tuple[str, str, str | None]


def node_rows(session: Session) -> list[NodeRow]:
    """Each node's (name, state, reason), in ``beostat nodes`` order (a database thread)."""
    return [(name or "", state, reason) for name, state, reason, _a, _s in node_states(session)]


def user_name(uid: int) -> str:
    """The login name of ``uid``, or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def node_tile(name: str, state: str, reason: str | None, view: NodeView | None) -> dict[str, Any]:
    """One node of the grid: its state and its last heartbeat's load, memory and cache."""
    memory = view.memory if view else {}
    cache = view.cache if view else {}
    load = view.load if view else []
    return {
        "name": name,
        "state": state,
        "reason": reason,
        "load": round(load[0], 2) if load else None,
        "mem_total": memory.get("total"),
        "mem_available": memory.get("available"),
        "cache_used": cache.get("bytes_used"),
        "cache_budget": cache.get("budget"),
    }


def job_entry(run: JobRun, user: str) -> dict[str, Any]:
    """One running job: its nodes and each one's fill (files and bytes so far)."""
    nodes = []
    for name in run.nodes:
        p = run.progress.get(name)
        filled = name in run.fills or run.state == "running"
        nodes.append(
            {
                "name": name,
                "files_done": p.files_done if p else 0,
                "files_total": p.files_total if p else 0,
                "bytes_done": p.bytes_done if p else 0,
                "bytes_total": p.bytes_total if p else 0,
                "filled": filled or bool(p and p.files_total and p.files_done >= p.files_total),
            }
        )
    return {
        "job": run.job_id,
        "uid": run.uid,
        "user": user,
        "state": run.state,
        "tasks": run.tasks,
        "nodes": nodes,
    }


def ended_entry(entry: dict[str, Any], done: Done | None) -> dict[str, Any]:
    """A job's last live entry, once it ended: its exit status, and every node
    filled when it exited 0 (then every node ran its tasks, so filled first)."""
    status = None if done is None else done.status
    nodes = entry["nodes"]
    if status == 0:
        nodes = [
            {**n, "filled": True, "files_done": n["files_total"], "bytes_done": n["bytes_total"]}
            for n in nodes
        ]
    return {**entry, "state": "ended", "exit": status, "nodes": nodes}


def snapshot(
    rows: list[NodeRow],
    views: Mapping[str, NodeView],
    runs: Mapping[int, JobRun],
    users: Mapping[int, str],
) -> dict[str, Any]:
    """The page's live document (pure: the feed gives it what it read; ``users``:
    uid -> login name of each run's owner)."""
    return {
        "nodes": [node_tile(n, s, r, views.get(n)) for n, s, r in rows],
        "jobs": [job_entry(runs[j], users.get(runs[j].uid, "?")) for j in sorted(runs)],
        "at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


class StatusFeed:
    """One snapshot per tick for every open stream (see the module doc)."""

    def __init__(
        self,
        db: DbWork,
        views: Mapping[str, NodeView],
        runs: Callable[[], Mapping[int, JobRun]],
        *,
        ended: Callable[[], Mapping[int, Done]] = dict,
        tick_s: float = TICK_S,
    ) -> None:
        """``runs``: the scheduler's running jobs; ``ended``: its jobs ended lately."""
        self.db = db
        self.views = views
        self.runs = runs
        self.ended = ended
        #: the last snapshot's running jobs, and the jobs ended since (when, entry)
        self._shown: list[dict[str, Any]] = []
        self._recent: dict[int, tuple[float, dict[str, Any]]] = {}
        self.tick_s = tick_s
        self.subscribers: set[asyncio.Queue[str]] = set()
        #: snapshots made (the bench and the tests read it)
        self.made = 0
        self.latest: str | None = None
        self._wake = asyncio.Event()
        self._users: dict[int, str] = {}

    def subscribe(self) -> asyncio.Queue[str]:
        """A new stream's queue; it holds the latest snapshot at once when there is one."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        if self.subscribers and self.latest is not None:  # ticking: the latest is fresh
            queue.put_nowait(self.latest)
        self.subscribers.add(queue)
        self._wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self.subscribers.discard(queue)

    async def current(self) -> str:
        """The latest snapshot while the feed ticks (a stream is open), else a new one."""
        if self.subscribers and self.latest is not None:
            return self.latest
        return await self.make()

    async def make(self) -> str:
        """Build, encode and fan out one snapshot; the JSON text."""
        rows = await self.db.read(node_rows)
        runs = self.runs()
        unknown = {run.uid for run in runs.values()} - set(self._users)
        if unknown:  # NSS may ask a directory server: off the loop, once per uid
            names = await asyncio.to_thread(lambda: {uid: user_name(uid) for uid in unknown})
            self._users.update(names)
        doc = snapshot(rows, self.views, runs, self._users)
        doc["jobs"] += self._lately_ended(doc["jobs"])
        text = json.dumps(doc, separators=(",", ":"))
        self.made += 1
        self.latest = text
        for queue in self.subscribers:
            if queue.full():
                queue.get_nowait()  # the stream has not sent the last one: only the newest
            queue.put_nowait(text)
        return text

    def _lately_ended(self, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Entries of the jobs that left the running ones within RECENT_S."""
        now = time.monotonic()
        ids = {entry["job"] for entry in live}
        ended = self.ended()
        for entry in self._shown:
            if entry["job"] not in ids and entry["job"] not in self._recent:
                self._recent[entry["job"]] = (now, ended_entry(entry, ended.get(entry["job"])))
        self._recent = {
            job: (at, entry)
            for job, (at, entry) in self._recent.items()
            if now - at < RECENT_S and job not in ids
        }
        self._shown = live
        return [entry for _at, entry in self._recent.values()]

    async def run_forever(self) -> None:
        """Tick while a stream is open; sleep until one opens otherwise. Until cancelled."""
        while True:
            if not self.subscribers:
                self._wake.clear()
                await self._wake.wait()
            try:
                await self.make()
            except Exception:  # the database away, say: the next tick tries again
                log.exception("the status snapshot failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(self.tick_s)
