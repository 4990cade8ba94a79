"""Database work off the event loop: answers, errors, per-key order, retries."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from launcher.errors import DatabaseUnavailable
from launcher.master.dbwork import DbWork
from launcher.state.models import Node
from launcher.state.nodes import add_node


def test_read_and_write_run_in_a_database_thread(engine: Engine) -> None:
    async def main() -> tuple[str, list[str]]:
        db = DbWork(engine)
        try:

            def write(session: Session) -> str:
                add_node(session, "n1")
                return threading.current_thread().name

            thread = await db.write(write)
            names = await db.read(lambda s: list(s.scalars(select(Node.name))))
            return thread, [n or "" for n in names]
        finally:
            await db.close()

    thread, names = asyncio.run(main())
    assert thread.startswith("beolaunch-db") and thread != threading.current_thread().name
    assert names == ["n1"]


def test_an_error_in_the_thread_is_raised_in_the_caller(engine: Engine) -> None:
    async def main() -> None:
        db = DbWork(engine)
        try:
            await db.run(_away)
        finally:
            await db.close()

    with pytest.raises(DatabaseUnavailable):
        asyncio.run(main())


def _away() -> None:
    raise DatabaseUnavailable("sqlite://", "gone")


def test_posted_work_keeps_its_order_per_key_and_waits_for_the_database(
    engine: Engine,
) -> None:
    done: list[str] = []
    tries = {"first": 0}

    def first() -> None:
        tries["first"] += 1
        if tries["first"] < 3:  # away twice, then back
            raise DatabaseUnavailable("sqlite://", "gone")
        done.append("first")

    async def main() -> None:
        db = DbWork(engine, retry_s=0.01)
        try:
            db.post("n1", "first", first)
            last = db.post("n1", "second", lambda: done.append("second"))
            db.post("n2", "other", lambda: done.append("other"))
            assert db.pending("n1") == 2
            await asyncio.wait_for(last, 5)
            assert db.pending("n1") == 0
        finally:
            await db.close()

    asyncio.run(main())
    assert tries["first"] == 3
    assert done.index("first") < done.index("second")
    assert "other" in done


def test_a_broken_piece_is_dropped_and_the_rest_runs(engine: Engine) -> None:
    done: list[str] = []

    def broken() -> None:
        raise ValueError("a bug")

    async def main() -> None:
        db = DbWork(engine)
        try:
            db.post("n1", "broken", broken)
            await asyncio.wait_for(db.post("n1", "after", lambda: done.append("after")), 5)
        finally:
            await db.close()

    asyncio.run(main())
    assert done == ["after"]
