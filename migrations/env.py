"""Alembic environment: runs revisions on the engine Beolaunch passes in.

``launcher.state.migrate`` puts the engine in ``config.attributes['engine']`` so
migrations run with the same SQLite PRAGMAs as the application. Running the
``alembic`` command directly also works: it builds an engine from the URL.
"""

from __future__ import annotations

from typing import Any

from alembic import context

import launcher.state.models  # noqa: F401  (registers every table on Base.metadata)
from launcher.state.base import Base, UTCDateTime
from launcher.state.db import make_engine

config = context.config


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write UTCDateTime as plain sa.DateTime(timezone=True): revisions must not
    import application code that may change after they are written."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or make_engine(
        config.get_main_option("sqlalchemy.url") or ""
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things: batch mode copies the table.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
