"""Several processes writing one SQLite state database at once lose nothing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from sqlalchemy import func, select

from launcher.state import migrate
from launcher.state.db import make_engine, transaction
from launcher.state.models import Event
from launcher.state.nodes import add_node, get_node
from launcher.state.record import record_event

WRITERS = 4
TRANSACTIONS = 60


def _writer(url: str, writer: int, errors: multiprocessing.Queue[str]) -> None:
    engine = make_engine(url)
    try:
        for i in range(TRANSACTIONS):
            # Read-modify-write: the pattern that, in a deferred transaction,
            # fails at once with "database is locked" when another process
            # committed between our read and our write.
            with transaction(engine) as session:
                node = get_node(session, "counter")
                count = (node.hardware or {}).get("count", 0)
                node.hardware = {"count": count + 1}
                record_event(session, f"writer {writer} step {i}", node=node)
    except Exception as exc:  # reported to the parent, which asserts none
        errors.put(f"writer {writer}: {type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


def test_concurrent_writers_lose_no_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    with transaction(engine) as session:
        add_node(session, "counter")
    ctx = multiprocessing.get_context("spawn")
    errors: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, w, errors)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert reported == []
    assert [p.exitcode for p in procs] == [0] * WRITERS
    with transaction(engine, readonly=True) as session:
        assert get_node(session, "counter").hardware == {"count": WRITERS * TRANSACTIONS}
        assert session.scalar(select(func.count(Event.id))) == WRITERS * TRANSACTIONS
    engine.dispose()


def test_wal_and_foreign_keys_are_on(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    engine.dispose()
