"""``[envroot] binds``: what the master accepts and what nodes get."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from launcher import envconfig
from launcher.envconfig import NodeEnvSettings
from launcher.errors import ConfigError


def _load(tmp_path: Path, line: str) -> envconfig.EnvRootSettings:
    table = tomllib.loads(line)
    return envconfig.parse(tmp_path / "config.toml", table)


def test_binds_are_normalised_and_reach_the_nodes(tmp_path: Path) -> None:
    settings = _load(tmp_path, 'binds = ["/scratch/", "//home", "/scratch"]')
    assert settings.binds == ("/scratch", "/home")
    assert NodeEnvSettings.from_wire(settings.for_nodes()).binds == ("/scratch", "/home")


@pytest.mark.parametrize("bind", ["/tmp", "/tmp/shared", "/proc/x", "/dev"])
def test_a_bind_where_each_task_has_its_own_mount_is_refused(tmp_path: Path, bind: str) -> None:
    with pytest.raises(ConfigError, match="each task has its own") as info:
        _load(tmp_path, f'binds = ["{bind}"]')
    assert bind in str(info.value) and "envroot.binds" in str(info.value)
    with pytest.raises(ValueError, match="each task has its own"):
        NodeEnvSettings.from_wire({"binds": [bind]})


def test_tmpfs_like_names_are_not_taken_for_tmp(tmp_path: Path) -> None:
    assert _load(tmp_path, 'binds = ["/tmpdata", "/devel"]').binds == ("/tmpdata", "/devel")
