"""The ``[slurm]`` table of config.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import ConfigError
from launcher.slurm import settings


def test_absent_table_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[state]\n")
    assert settings.load(path) == settings.SlurmSettings()


def test_table_sets_ports_and_names(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[slurm]\nslurmctld_port = 20001\nslurmd_port = 20002\ncluster_name = "c2"\n')
    got = settings.load(path)
    assert (got.slurmctld_port, got.slurmd_port, got.cluster_name) == (20001, 20002, "c2")


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"slurmctld_port": 70000}, "slurm.slurmctld_port"),
        ({"slurmd_port": "6818"}, "slurm.slurmd_port"),
        ({"prolog_timeout": 0}, "slurm.prolog_timeout"),
        ({"partition": "a b"}, "slurm.partition"),
        ({"colour": "red"}, "slurm.colour"),
        ({"slurmctld_port": 7000, "slurmd_port": 7000}, "slurm.slurmd_port"),
    ],
)
def test_bad_values_name_their_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings.parse(Path("/c.toml"), table)
    assert info.value.key == key


def test_submit_is_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[slurm]\nsubmit = true\n")
    assert settings.load(path).submit is True
    path.write_text('[slurm]\nsubmit = "yes"\n')
    with pytest.raises(ConfigError, match=r"slurm\.submit"):
        settings.load(path)
