"""The CLI tests' state dir: ``beoctl init`` in a tmp dir, $BEOLAUNCH_CONFIG at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.cli import beoctl
from launcher.config import CONFIG_ENV


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state_dir = tmp_path / "beo"
    assert beoctl.main(["init", "--state-dir", str(state_dir)]) == 0
    monkeypatch.setenv(CONFIG_ENV, str(state_dir / "config.toml"))
    return state_dir
