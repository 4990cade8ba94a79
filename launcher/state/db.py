"""Engines and transactions for the state database.

SQLite is the default (one file in the state dir). Several processes write to
it at once (master, CLI, Slurm prologs), so every connection turns on WAL,
foreign keys and a busy timeout, and write transactions start with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can hit
SQLITE_BUSY at once, without waiting, when another writer committed in
between; taking the write lock up front makes the busy timeout apply instead.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import Session

from launcher.errors import DatabaseUnavailable, StateError

SQLITE_BUSY_TIMEOUT_MS = 30_000
_READONLY = "beolaunch_readonly"


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with Beolaunch's per-backend settings.

    Raises StateError for a URL SQLAlchemy cannot use (bad form, missing driver).
    """
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            _configure_sqlite(engine)
            return engine
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            # SQLAlchemy's default PostgreSQL driver is psycopg2; we ship psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise StateError(f"cannot use database URL {url!r}: {exc}") from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get(_READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def protect_sqlite(engine: Engine) -> list[str]:
    """Make a SQLite state database readable by its owner only (mode 0600): it
    holds every job's argv, environment and paths (users see their own through
    the master). SQLite gives its -wal and -shm files the database's mode. Does
    nothing for other databases (PostgreSQL's are its server's). Returns the
    files changed."""
    if engine.url.get_backend_name() != "sqlite" or not engine.url.database:
        return []
    changed = []
    for suffix in ("", "-wal", "-shm"):
        path = f"{engine.url.database}{suffix}"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
            changed.append(path)
    return changed


def read_only(engine: Engine) -> Engine:
    """The same engine, whose transactions do not take SQLite's write lock."""
    return engine.execution_options(**{_READONLY: True})


@contextmanager
def transaction(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on error.

    ``readonly`` transactions do not take SQLite's write lock, so status commands
    never wait behind a writer. A lock still held by another process after the
    busy timeout becomes a StateError that says so.
    """
    bind = read_only(engine) if readonly else engine
    try:
        with Session(bind, expire_on_commit=False) as session, session.begin():
            yield session
    except OperationalError as exc:
        if "database is locked" in str(exc.orig):
            raise StateError(
                f"the state database {engine.url!r} stayed locked by another process for "
                f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s; retry, or look for a stuck beolaunch process"
            ) from exc
        raise DatabaseUnavailable(_shown(engine), _first_line(exc.orig)) from exc
    except (InterfaceError, DisconnectionError) as exc:
        raise DatabaseUnavailable(_shown(engine), _first_line(exc)) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(_shown(engine), _first_line(exc.orig)) from exc
        raise


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _first_line(error: object) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
