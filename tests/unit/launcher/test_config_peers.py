"""The optional [peers] table: defaults, values, and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from launcher import config as cfg
from launcher.errors import ConfigError


def document(**peers: Any) -> dict[str, Any]:
    services = {
        name: {"address": "127.0.0.1", "port": 5000 + i} for i, name in enumerate(cfg.SERVICES)
    }
    doc: dict[str, Any] = {
        "state": {"dir": "/srv/beo", "database": "sqlite:////srv/beo/db", "secret_file": "/srv/s"},
        "services": services,
    }
    if peers:
        doc["peers"] = peers
    return doc


def test_without_the_table_nodes_serve_peers_on_the_default_port() -> None:
    config = cfg.parse(Path("c.toml"), document())
    assert config.peers == cfg.PeerSettings(cfg.DEFAULT_PEER_PORT, cfg.DEFAULT_FANOUT)
    assert "peers" not in cfg.render(config)


def test_the_table_sets_port_and_fanout_and_renders_back() -> None:
    config = cfg.parse(Path("c.toml"), document(port=0, fanout=3))
    assert config.peers == cfg.PeerSettings(0, 3)
    assert cfg.parse(Path("c.toml"), cfg.render(config)) == config


@pytest.mark.parametrize(
    ("peers", "key"),
    [({"port": 70000}, "peers.port"), ({"fanout": 0}, "peers.fanout"), ({"size": 1}, "peers.size")],
)
def test_bad_values_name_their_key(peers: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        cfg.parse(Path("c.toml"), document(**peers))
    assert key in str(caught.value)
