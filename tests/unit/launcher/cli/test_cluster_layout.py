"""``[cluster]`` in the config picks the virtual cluster's names and subnet."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from launcher import cluster as vc
from launcher.cli import beoctl
from launcher.cli.beoctl.cluster import (
    BUDGET_SHARE,
    cache_budget,
    configured_layout,
    default_commands,
)
from launcher.cluster.spec import node_spec
from launcher.config import load
from launcher.errors import ConfigError
from launcher.state.db import make_engine


def _config_with(tmp_path: Path, extra: str) -> Path:
    state_dir = tmp_path / "beo"
    assert beoctl.main(["init", "--state-dir", str(state_dir)]) == 0
    path = state_dir / "config.toml"
    path.write_text(path.read_text() + extra)
    return path


def _engine(path: Path) -> Engine:
    return make_engine(load(str(path)).database_url)


def test_no_cluster_table_keeps_the_default_layout(tmp_path: Path) -> None:
    assert configured_layout(load(str(_config_with(tmp_path, "")))) == vc.DEFAULT_LAYOUT


def test_cluster_table_sets_layout_and_agents_dial_its_master_address(tmp_path: Path) -> None:
    path = _config_with(
        tmp_path,
        '\n[cluster]\nbridge = "bt7"\nnetns_prefix = "bt7-node"\nveth_prefix = "bt7v"\n'
        'subnet = "10.79.7.0/24"\n',
    )
    config = load(str(path))
    assert configured_layout(config) == vc.Layout(
        bridge="bt7", veth_prefix="bt7v", netns_prefix="bt7-node", subnet="10.79.7.0/24"
    )
    node_command, _master = default_commands(config, _engine(path))
    assert node_command is not None
    spec = node_spec(config.state_dir, configured_layout(config), 1)
    argv = node_command(spec)
    assert argv[argv.index("--master") + 1] == "ws://10.79.7.1:4870/node"


def test_cluster_value_not_a_string_is_a_config_error(tmp_path: Path) -> None:
    path = _config_with(tmp_path, "\n[cluster]\nsubnet = 7\n")
    with pytest.raises(ConfigError) as err:
        configured_layout(load(str(path)))
    assert err.value.key == "cluster.subnet"


def test_cache_budget_stays_inside_the_node_tmpfs() -> None:
    assert cache_budget("512M") == int(512 * 2**20 * BUDGET_SHARE)
    assert cache_budget("2g") == int(2 * 2**30 * BUDGET_SHARE)
    assert cache_budget("1000") == 900
    assert cache_budget("10%") is None


def test_agents_get_the_budget_as_an_argument(tmp_path: Path) -> None:
    path = _config_with(tmp_path, "")
    config = load(str(path))
    node_command, _master = default_commands(config, _engine(path), 12345)
    assert node_command is not None
    argv = node_command(node_spec(config.state_dir, vc.DEFAULT_LAYOUT, 1))
    assert argv[argv.index("--cache-budget") + 1] == "12345"
