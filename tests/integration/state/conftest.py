from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from launcher.state import migrate
from launcher.state.db import make_engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A database at the head revision, made by the real migrations."""
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()
