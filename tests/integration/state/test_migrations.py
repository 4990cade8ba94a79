"""The Alembic revisions and the models agree, and round-trip, on both databases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from launcher.errors import SchemaMismatchError
from launcher.state import migrate
from launcher.state.base import Base
from launcher.state.db import make_engine

FIRST = "8d3c953ffda5"  # the initial schema
TABLES = {
    "boot_images",
    "boot_assignments",
    "nodes",
    "objects",
    "manifests",
    "manifest_entries",
    "cache_entries",
    "cache_pins",
    "jobs",
    "job_nodes",
    "events",
    "late_files",
    "learned_files",
    "alembic_version",
}


def test_head_matches_models(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_shipped_head_constant_is_alembics_head() -> None:
    assert migrate.head_revision() == migrate._scripts_head(migrate.migrations_dir())


def test_upgrade_downgrade_upgrade_round_trips(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        assert set(inspect(engine).get_table_names()) == TABLES
        assert migrate.current_revision(engine) == migrate.head_revision()
        migrate.downgrade(engine, "base")
        assert migrate.current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engine)
        assert set(inspect(engine).get_table_names()) == TABLES
        migrate.check(engine)
    finally:
        engine.dispose()


def test_upgrade_carries_existing_rows(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, FIRST)
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO manifests VALUES (:id, 1000, '/bin/x', :t)"),
                {"id": "a" * 64, "t": "2026-11-01 00:00:00+00:00"},
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (id, scheduler, uid, manifest_id, state, "
                    "submitted_at) VALUES (1, 'local', 1000, :m, 'completed', :t)"
                ),
                {"m": "a" * 64, "t": "2026-11-01 00:00:00+00:00"},
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT nodes_requested, tasks, argv FROM jobs")).one()
        assert tuple(row) == (1, 1, None)
        migrate.downgrade(engine, FIRST)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
    finally:
        engine.dispose()


def test_unmigrated_database_is_refused_with_the_command(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with pytest.raises(SchemaMismatchError, match=r"\(none\).*beoctl init") as err:
            migrate.open_engine(db_url)
        assert err.value.head == migrate.head_revision()
        assert inspect(engine).get_table_names() == []  # nothing written
    finally:
        engine.dispose()


NEXT_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0002testnext"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("next_feature", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("next_feature")
"""


@pytest.fixture
def next_scripts(tmp_path: Path) -> Path:
    """A copy of migrations/ with one more revision: what a newer Beolaunch ships."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0002_next.py").write_text(
        NEXT_REVISION.format(head=migrate.head_revision())
    )
    return scripts


def test_newer_database_is_refused_without_writes(
    engine: Engine, db_url: str, next_scripts: Path
) -> None:
    migrate.upgrade(engine, scripts=next_scripts)  # a newer Beolaunch touched it
    with pytest.raises(SchemaMismatchError) as err:
        migrate.open_engine(db_url)
    message = str(err.value)
    assert "0002testnext" in message and migrate.head_revision() in message
    assert "newer than this Beolaunch" in message
    assert migrate.current_revision(engine) == "0002testnext"


def test_older_database_names_upgrade_without_writes(engine: Engine, next_scripts: Path) -> None:
    # This database is at our head; to a Beolaunch one revision newer it is old.
    with pytest.raises(SchemaMismatchError, match="run 'beoctl db upgrade'") as err:
        migrate.check(engine, scripts=next_scripts)
    assert err.value.current == migrate.head_revision()
    assert err.value.head == "0002testnext"
    assert "next_feature" not in inspect(engine).get_table_names()
