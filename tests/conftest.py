"""Suite-wide fixtures and the guard that a run which passed nothing fails.

State tests run on SQLite and on PostgreSQL. ``make test`` starts PostgreSQL
and sets BEOLAUNCH_TEST_PG_URL and BEOLAUNCH_REQUIRE_PG=1, so there the
PostgreSQL half fails rather than skips when the server is missing. Run by
hand without the URL, it is skipped with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bench.pgschema import pg_schema
from launcher.state import migrate
from launcher.state.db import make_engine

PG_URL_ENV = "BEOLAUNCH_TEST_PG_URL"
REQUIRE_PG_ENV = "BEOLAUNCH_REQUIRE_PG"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # pytest exits 0 when every test was skipped or deselected; a run in which
    # nothing passed proves nothing, so fail it (exit 5, pytest's "no tests ran").
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 0
    if exitstatus == 0 and passed == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


def _pg_base_url() -> str:
    url = os.environ.get(PG_URL_ENV)
    if url:
        return url
    reason = f"PostgreSQL tests need ${PG_URL_ENV} (make test sets it and starts the server)"
    if os.environ.get(REQUIRE_PG_ENV) or os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections land in a fresh PostgreSQL schema, dropped afterwards."""
    with pg_schema(_pg_base_url()) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend the state layer supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A database at the head revision, made by the real migrations, on each backend."""
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state directory path (not yet made) under the test's tmp dir."""
    return tmp_path / "state"
