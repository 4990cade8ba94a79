"""The state tests' populated database (populate.py), one per test."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from launcher.state.db import transaction
from tests.integration.state.populate import Populated, populate


@pytest.fixture
def cluster(engine: Engine) -> Populated:
    with transaction(engine) as session:
        return populate(session)
