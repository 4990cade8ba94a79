"""A node's events (its syslog lines, state changes, boot steps), oldest first."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from launcher.errors import StateError
from launcher.state.models import EVENT_LEVELS, Event, Node


def node_events(
    session: Session,
    node: Node,
    *,
    since: datetime | None = None,
    level: str = "debug",
    last: int | None = None,
) -> list[Event]:
    """The events of ``node`` at ``since`` or later and at ``level`` or worse, oldest
    first; only the ``last`` newest of them when given.

    Raises StateError for an unknown level or a ``last`` below 1.
    """
    if level not in EVENT_LEVELS:
        raise StateError(f"event level {level!r}: expected one of {', '.join(EVENT_LEVELS)}")
    if last is not None and last < 1:
        raise StateError(f"number of events {last}: expected at least 1")
    levels = EVENT_LEVELS[EVENT_LEVELS.index(level) :]
    stmt = select(Event).where(Event.node_id == node.id, Event.level.in_(levels))
    if since is not None:
        stmt = stmt.where(Event.time >= since)
    stmt = stmt.order_by(Event.time.desc(), Event.id.desc())
    if last is not None:
        stmt = stmt.limit(last)
    return list(reversed(list(session.scalars(stmt))))
