"""A Preparation with no nodes and no sources, for tests of what sits on it."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from cachefs.store import Store
from launcher.master.capability import CapabilityAuthorizer
from launcher.master.links import NodeLink
from launcher.master.preparation import Preparation
from launcher.state.db import make_engine
from launcher.state.migrate import upgrade


def bare_preparation(tmp_path: Path) -> tuple[Preparation, Store]:
    """A Preparation over a new SQLite database and store under ``tmp_path``."""
    store = Store(tmp_path / "store")
    engine = make_engine(f"sqlite:///{tmp_path / 'db'}")
    upgrade(engine)
    prep = Preparation(
        engine,
        store,
        cast(dict[str, NodeLink], {}),
        sources=lambda _link: [],
        capabilities=CapabilityAuthorizer("secret", store),
    )
    return prep, store
