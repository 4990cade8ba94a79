"""The status page's live snapshot: made once per tick for every stream, from memory
plus one database read, and nothing at all while no stream is open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from launcher.master.jobs import JobRun
from launcher.master.nodes import NodeView
from launcher.master.statusfeed import StatusFeed, snapshot
from launcher.wire import Done, Progress

T = TypeVar("T")


class CountingDb:
    """A DbWork stand-in: answers the node rows and counts the reads."""

    def __init__(self, rows: list[tuple[str, str, str | None]]) -> None:
        self.rows = rows
        self.reads = 0

    async def read(self, fn: Callable[[Any], T]) -> T:
        self.reads += 1
        return self.rows  # type: ignore[return-value]


def _run() -> JobRun:
    run = JobRun(job_id=5, uid=0, tasks=2, nodes=["n0", "n1"])
    run.publish(Progress(5, 3, 10, 300, 1000, node="n0"))
    run.publish(Progress(5, 10, 10, 1000, 1000, node="n1"))
    return run


def test_the_snapshot_has_each_nodes_figures_and_each_jobs_fill() -> None:
    views = {
        "n0": NodeView(
            load=[1.5, 1, 1],
            memory={"total": 100, "available": 40},
            cache={"bytes_used": 7, "budget": 70},
        )
    }
    doc = snapshot([("n0", "busy", None), ("n1", "down", "lost")], views, {5: _run()}, {0: "root"})
    assert doc["nodes"][0] == {
        "name": "n0",
        "state": "busy",
        "reason": None,
        "load": 1.5,
        "mem_total": 100,
        "mem_available": 40,
        "cache_used": 7,
        "cache_budget": 70,
    }
    assert doc["nodes"][1]["state"] == "down" and doc["nodes"][1]["load"] is None
    [job] = doc["jobs"]
    assert (job["job"], job["user"], job["state"]) == (5, "root", "preparing")
    assert [(n["name"], n["files_done"], n["filled"]) for n in job["nodes"]] == [
        ("n0", 3, False),
        ("n1", 10, True),
    ]


def test_every_stream_gets_the_same_snapshot_from_one_read_per_tick() -> None:
    async def main() -> None:
        db = CountingDb([("n0", "up", None)])
        feed = StatusFeed(db, {}, lambda: {5: _run()}, tick_s=0.01)  # type: ignore[arg-type]
        streams = [feed.subscribe() for _ in range(10)]
        text = await feed.make()
        assert db.reads == 1
        got = [q.get_nowait() for q in streams]
        assert all(t is text for t in got)  # one string, shared
        assert json.loads(text)["nodes"][0]["name"] == "n0"

    asyncio.run(main())


def test_a_stalled_stream_holds_only_the_newest_snapshot() -> None:
    async def main() -> None:
        db = CountingDb([("n0", "up", None)])
        feed = StatusFeed(db, {}, dict, tick_s=0.01)  # type: ignore[arg-type]
        stream = feed.subscribe()
        await feed.make()
        db.rows = [("n0", "down", None)]
        last = await feed.make()
        assert stream.qsize() == 1 and stream.get_nowait() == last

    asyncio.run(main())


def test_no_stream_no_work() -> None:
    async def main() -> None:
        db = CountingDb([])
        feed = StatusFeed(db, {}, dict, tick_s=0.01)  # type: ignore[arg-type]
        task = asyncio.create_task(feed.run_forever())
        await asyncio.sleep(0.1)
        assert db.reads == 0
        stream = feed.subscribe()
        await asyncio.wait_for(stream.get(), 5)
        assert db.reads >= 1
        feed.unsubscribe(stream)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_a_job_that_ended_stays_a_while_with_its_exit_status() -> None:
    async def main() -> None:
        runs = {5: _run()}
        ended: dict[int, Done] = {}
        feed = StatusFeed(CountingDb([]), {}, lambda: runs, ended=lambda: ended)  # type: ignore[arg-type]
        first = json.loads(await feed.make())
        assert [j["state"] for j in first["jobs"]] == ["preparing"]
        del runs[5]
        ended[5] = Done(5, 0)
        [job] = json.loads(await feed.make())["jobs"]
        assert (job["job"], job["state"], job["exit"]) == (5, "ended", 0)
        assert all(n["filled"] for n in job["nodes"])  # it exited 0: every node ran

    asyncio.run(main())
