"""A node's own problems drain it with them as the reason; only that drain is lifted
by the node (SQLite, the real schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from launcher.master.nodehealth import HEALTH_REASON, MAX_REASON, record_health
from launcher.state.db import make_engine, transaction
from launcher.state.migrate import upgrade
from launcher.state.models import Event, Node

MOUNT = "mount /home failed: Connection refused (no NFS server answers there)"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db'}")
    upgrade(engine)
    with transaction(engine) as session:
        session.add(Node(name="n1", state="up"))
    yield engine
    engine.dispose()


def _say(
    engine: Engine, problems: list[str], running: bool = False
) -> tuple[bool, str, str | None]:
    with transaction(engine) as session:
        node = session.scalars(select(Node)).one()
        lifted = record_health(session, node, problems, running=running)
        return lifted, node.state, node.state_reason


def _events(engine: Engine) -> int:
    with transaction(engine, readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_problems_drain_once_and_their_end_lifts_the_drain(engine: Engine) -> None:
    assert _say(engine, [MOUNT]) == (False, "drained", HEALTH_REASON + MOUNT)
    events = _events(engine)
    assert _say(engine, [MOUNT]) == (False, "drained", HEALTH_REASON + MOUNT)
    assert _events(engine) == events  # said again, unchanged: no second event
    assert _say(engine, [], running=True) == (True, "busy", None)
    assert _say(engine, []) == (False, "busy", None)  # nothing of its own to lift


def test_an_admins_drain_is_neither_replaced_nor_lifted(engine: Engine) -> None:
    with transaction(engine) as session:
        node = session.scalars(select(Node)).one()
        node.state, node.state_reason = "drained", "disk check"
    assert _say(engine, [MOUNT]) == (False, "drained", "disk check")
    assert _say(engine, []) == (False, "drained", "disk check")
    with transaction(engine, readonly=True) as session:
        said = session.scalars(select(Event.message)).all()
    assert any("stays drained: disk check" in m and MOUNT in m for m in said)


def test_many_long_problems_make_a_bounded_reason(engine: Engine) -> None:
    problems = [f"mount /data{i} failed: " + "x" * 1000 for i in range(32)]
    _, state, reason = _say(engine, problems)
    assert state == "drained" and reason is not None
    assert len(reason) == MAX_REASON and reason.startswith(HEALTH_REASON) and reason.endswith("...")
    assert _say(engine, [])[:2] == (True, "up")  # still recognised as the node's own
