"""The scheduler's database lane: database parts in a thread and in order, what
follows each on the loop, errors to ``failed``, and the look for work once a
database outage is over."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import Engine

from launcher.errors import DatabaseUnavailable
from launcher.master.dbwork import DbWork
from launcher.master.heldwrites import HeldWrites


def test_each_piece_runs_in_a_database_thread_then_follows_on_the_loop_in_order(
    engine: Engine,
) -> None:
    seen: list[tuple[str, str]] = []

    def work(name: str) -> str:
        seen.append(("db", name))
        return threading.current_thread().name

    async def main() -> None:
        db = DbWork(engine)
        held = HeldWrites(db)
        loop_thread = threading.current_thread().name
        try:
            for name in ("start", "exits", "end"):
                held.run(
                    name,
                    lambda n=name: work(n),  # type: ignore[misc]
                    lambda thread, n=name: seen.append(  # type: ignore[misc]
                        ("then", f"{n} {thread != loop_thread} {threading.current_thread().name}")
                    ),
                )
            assert len(held) == 3
            await asyncio.wait_for(held.run("last", lambda: None), 5)
        finally:
            await db.close()

    asyncio.run(main())
    assert [s for s in seen if s[0] == "db"] == [("db", "start"), ("db", "exits"), ("db", "end")]
    thens = [s[1] for s in seen if s[0] == "then"]
    assert thens == [f"{n} True MainThread" for n in ("start", "exits", "end")]


def test_a_failing_piece_goes_to_failed_and_the_lane_goes_on(engine: Engine) -> None:
    got: list[str] = []

    def broken() -> None:
        raise ValueError("a bug")

    async def main() -> None:
        db = DbWork(engine)
        held = HeldWrites(db)
        try:
            held.run(
                "broken", broken, lambda _: got.append("then"), failed=lambda e: got.append(str(e))
            )
            await asyncio.wait_for(held.run("after", lambda: "ok", got.append), 5)
        finally:
            await db.close()

    asyncio.run(main())
    assert got == ["a bug", "ok"]


def test_after_an_outage_the_lane_drains_in_order_and_then_looks_for_work(engine: Engine) -> None:
    tries = {"start": 0}
    order: list[str] = []
    drained: list[bool] = []

    def start() -> None:
        tries["start"] += 1
        if tries["start"] < 3:
            raise DatabaseUnavailable("sqlite://", "gone")
        order.append("start")

    async def main() -> None:
        db = DbWork(engine, retry_s=0.01)
        held = HeldWrites(db, on_drained=lambda: drained.append(held.away))
        try:
            held.run("start", start)
            await asyncio.sleep(0)  # the first try is under way
            last = held.run("end", lambda: order.append("end"))
            await asyncio.wait_for(last, 5)
            await asyncio.sleep(0)  # the done callbacks
        finally:
            await db.close()

    asyncio.run(main())
    assert tries["start"] == 3 and order == ["start", "end"]
    assert drained == [False]  # once, with the database back
