"""Config lookup order and the errors for missing, unreadable and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from launcher import config as cfg
from launcher.errors import ConfigError, ConfigMissingError

GOOD = {
    "state": {
        "dir": "/srv/beo",
        "database": "sqlite:////srv/beo/state.db",
        "secret_file": "/srv/beo/secret",
    },
    "services": {
        name: {"address": "10.7.0.1", "port": 5000 + i} for i, name in enumerate(cfg.SERVICES)
    },
}


def write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_lookup_order_flag_then_env_then_default() -> None:
    env = {cfg.CONFIG_ENV: "/from/env.toml"}
    assert cfg.locate("/from/flag.toml", env) == (Path("/from/flag.toml"), "from --config")
    assert cfg.locate(None, env)[0] == Path("/from/env.toml")
    assert cfg.locate(None, {})[0] == cfg.DEFAULT_CONFIG


def test_good_config_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = cfg.load(str(path))
    assert config.state_dir == Path("/srv/beo")
    assert str(config.service("tftp")) == "10.7.0.1:5004"
    assert cfg.render(config) == GOOD


def test_a_config_from_before_the_status_service_keeps_working_on_loopback(
    tmp_path: Path,
) -> None:
    old = {**GOOD, "services": {k: v for k, v in GOOD["services"].items() if k != "status"}}
    config = cfg.load(str(write(tmp_path, old)))
    assert str(config.service("status")) == f"127.0.0.1:{cfg.DEFAULT_PORTS['status']}"


def test_missing_config_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigMissingError, match="run 'beoctl init'") as err:
        cfg.load(None, {cfg.CONFIG_ENV: str(tmp_path / "nope.toml")})
    assert err.value.path == tmp_path / "nope.toml"
    assert "BEOLAUNCH_CONFIG" in str(err.value)


def test_directory_as_config_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as err:
        cfg.load(str(tmp_path))
    assert err.value.path == tmp_path


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[state\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        cfg.load(str(path))
    assert str(path) in str(err.value)


def _with(section: str, key: str, value: object) -> dict[str, object]:
    data: dict[str, object] = {
        "state": dict(GOOD["state"]),
        "services": {k: dict(v) for k, v in GOOD["services"].items()},
    }
    target = data
    for part in section.split("."):
        target = target[part]  # type: ignore[assignment]
    if value is None:
        del target[key]
    else:
        target[key] = value
    return data


@pytest.mark.parametrize(
    ("section", "key", "value", "bad_key", "expected"),
    [
        ("services.objects", "port", 70000, "services.objects.port", "integer port 1-65535"),
        ("services.objects", "port", "4871", "services.objects.port", "integer port 1-65535"),
        ("services.logs", "address", "master", "services.logs.address", "IPv4 or IPv6"),
        ("state", "dir", "relative/dir", "state.dir", "absolute path"),
        ("state", "database", "state.db", "state.database", "SQLAlchemy URL"),
        ("state", "secret_file", None, "state.secret_file", "non-empty string"),
        ("services", "control", None, "services.control", "expected a table"),
        ("services", "dns", {"address": "::1", "port": 53}, "services.dns", "unknown service"),
    ],
)
def test_bad_value_names_file_key_and_form(
    tmp_path: Path, section: str, key: str, value: object, bad_key: str, expected: str
) -> None:
    path = write(tmp_path, _with(section, key, value))
    with pytest.raises(ConfigError) as err:
        cfg.load(str(path))
    assert err.value.path == path
    assert err.value.key == bad_key
    assert expected in str(err.value)
    assert str(err.value).startswith(f"{path}: key '{bad_key}'")
