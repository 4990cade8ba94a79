"""Schema revisions: Alembic driven from code, and the check every command makes.

Commands that touch the state call :func:`open_engine`, which refuses (without
writing) a database whose revision is not this code's head, naming both
revisions and the command that fixes it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

import migrations
from launcher.errors import SchemaMismatchError, StateError
from launcher.state.db import make_engine, read_only

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# Alembic is imported inside the functions that move a schema: importing it costs
# about a fifth of a second, and every command checks the schema but few move it.


def migrations_dir() -> Path:
    return Path(str(files("migrations")))


def alembic_config(engine: Engine, scripts: Path | None = None) -> AlembicConfig:
    """An Alembic config that runs on ``engine`` (so SQLite gets our PRAGMAs).

    ``scripts`` replaces the shipped ``migrations/`` (tests use a copy with an
    extra revision to play a newer or older Beolaunch).
    """
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(scripts or migrations_dir()))
    # configparser interpolates '%': a URL-encoded password or query must be escaped.
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(scripts: Path | None = None) -> str:
    """The newest revision: ``migrations.HEAD`` for the shipped scripts (a test
    checks it against Alembic's answer), Alembic's answer for other ``scripts``."""
    if scripts is None:
        return migrations.HEAD
    return _scripts_head(scripts)


def _scripts_head(scripts: Path) -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(make_engine("sqlite://"), scripts))
    head = script.get_current_head()
    assert head is not None, f"{scripts} has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None when it has none); reads without locking."""
    with read_only(engine).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)


def upgrade(engine: Engine, target: str = "head", scripts: Path | None = None) -> None:
    _run("upgrade", engine, target, scripts)


def downgrade(engine: Engine, target: str, scripts: Path | None = None) -> None:
    _run("downgrade", engine, target, scripts)


def _run(step: str, engine: Engine, target: str, scripts: Path | None) -> None:
    from alembic import command
    from alembic.util.exc import CommandError

    try:
        getattr(command, step)(alembic_config(engine, scripts), target)
    except CommandError as exc:
        raise StateError(
            f"cannot move database {engine.url!r} to revision {target!r}: {exc}"
        ) from exc


def check(engine: Engine, scripts: Path | None = None) -> None:
    """Raise SchemaMismatchError unless the database is exactly at this code's head."""
    head = head_revision(scripts)
    current = current_revision(engine)
    if current == head:
        return
    url = engine.url.render_as_string(hide_password=True)
    if current is None:
        has_tables = bool(set(inspect(engine).get_table_names()) - {"alembic_version"})
        advice = (
            "it has tables but no Alembic revision; restore it or point state.database "
            "at a new database"
            if has_tables
            else "run 'beoctl init' or 'beoctl db upgrade'"
        )
        raise SchemaMismatchError(url, None, head, advice)
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    script = ScriptDirectory.from_config(alembic_config(engine, scripts))
    try:
        known = script.get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        raise SchemaMismatchError(
            url,
            current,
            head,
            "the database is newer than this Beolaunch; install the Beolaunch that "
            "wrote it, or run its 'beoctl db downgrade " + head + "'",
        )
    raise SchemaMismatchError(url, current, head, "run 'beoctl db upgrade'")


def open_engine(url: str) -> Engine:
    """An engine on a database at the head revision (checked, nothing written)."""
    engine = make_engine(url)
    check(engine)
    return engine
