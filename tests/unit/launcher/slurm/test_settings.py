"""The ``[slurm]`` table of config.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import ConfigError
from launcher.slurm import settings

PATH = Path("/c.toml")


def test_an_empty_table_gives_the_defaults() -> None:
    assert settings.parse(PATH, {}) == settings.SlurmSettings()
    assert settings.render(settings.SlurmSettings()) == {}


def test_table_sets_ports_and_names() -> None:
    table = {"slurmctld_port": 20001, "slurmd_port": 20002, "cluster_name": "c2"}
    got = settings.parse(PATH, table)
    assert (got.slurmctld_port, got.slurmd_port, got.cluster_name) == (20001, 20002, "c2")
    assert settings.render(got) == table


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
        settings.parse(PATH, table)
    assert info.value.key == key


def test_submit_is_a_boolean() -> None:
    assert settings.parse(PATH, {"submit": True}).submit is True
    with pytest.raises(ConfigError, match=r"slurm\.submit"):
        settings.parse(PATH, {"submit": "yes"})
