"""beoctl init's work: what it creates, that a second run changes nothing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from launcher import config as cfg
from launcher.errors import ConfigError, InitConflictError
from launcher.initialize import initialize
from launcher.state import migrate
from launcher.state.db import make_engine


def _snapshot(state_dir: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in state_dir.iterdir()}


def test_init_creates_state_dir_config_secret_and_database(tmp_path: Path) -> None:
    state = tmp_path / "beo"
    result = initialize(state)
    assert len(result.created) == 4
    config = cfg.load(str(state / "config.toml"))
    assert config.state_dir == state
    assert config.database_url == f"sqlite:///{state / 'state.db'}"
    assert set(config.services) == set(cfg.SERVICES)
    assert stat.S_IMODE(config.secret_file.stat().st_mode) == 0o600
    assert len(config.secret_file.read_text().strip()) == 64
    engine = make_engine(config.database_url)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()


def test_second_init_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "beo"
    initialize(state)
    before = _snapshot(state)
    secret = (state / "secret").read_bytes()
    assert initialize(state).created == []
    assert (state / "secret").read_bytes() == secret
    after = _snapshot(state)
    # SQLite may create -wal/-shm files while opening; the config and secret do not change.
    for name in ("config.toml", "secret"):
        assert after[name] == before[name]


def test_init_with_another_database_conflicts(tmp_path: Path) -> None:
    initialize(tmp_path / "beo")
    with pytest.raises(InitConflictError, match="already uses database"):
        initialize(tmp_path / "beo", "sqlite:////elsewhere.db")


def test_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    initialize(tmp_path / "beo")
    (tmp_path / "beo" / "secret").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        initialize(tmp_path / "beo")


@pytest.mark.postgresql
def test_init_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    result = initialize(tmp_path / "beo", pg_url)
    assert any("at revision" in c for c in result.created)
    assert initialize(tmp_path / "beo", pg_url).created == []
