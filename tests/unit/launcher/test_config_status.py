"""``[services.status]``: optional (a config written before issue 16 has none), then
the status page listens on loopback only; given, it is parsed like every service."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import config as cfg
from launcher.errors import ConfigError
from launcher.initialize import initialize
from tests.unit.launcher.test_config import GOOD, write

SERVICES: dict[str, dict[str, object]] = {
    name: {"address": "10.7.0.1", "port": 5000 + i} for i, name in enumerate(cfg.SERVICES)
}


def test_a_config_without_the_status_table_serves_it_on_loopback(tmp_path: Path) -> None:
    doc = {**GOOD, "services": {k: v for k, v in SERVICES.items() if k != "status"}}
    config = cfg.load(str(write(tmp_path, doc)))
    assert config.service("status") == cfg.ServiceAddress("127.0.0.1", 4875)


def test_a_given_status_table_is_used_and_checked(tmp_path: Path) -> None:
    config = cfg.load(str(write(tmp_path, {**GOOD, "services": SERVICES})))
    assert config.service("status") == cfg.ServiceAddress("10.7.0.1", SERVICES["status"]["port"])  # type: ignore[arg-type]
    bad = {**GOOD, "services": {**SERVICES, "status": {"address": "x", "port": 1}}}
    with pytest.raises(ConfigError, match=r"services\.status\.address"):
        cfg.load(str(write(tmp_path, bad)))


def test_init_writes_the_status_table_on_loopback(tmp_path: Path) -> None:
    initialize(tmp_path / "state")
    doc = (tmp_path / "state" / cfg.CONFIG_NAME).read_text()
    config = cfg.load(str(tmp_path / "state" / cfg.CONFIG_NAME))
    assert "[services.status]" in doc
    assert config.service("status") == cfg.ServiceAddress("127.0.0.1", cfg.DEFAULT_PORTS["status"])
