"""``[envroot]``: defaults, checks naming the key, and what nodes get."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from launcher.envconfig import (
    DEFAULT_MASTER_FILES,
    EnvRootSettings,
    NodeEnvSettings,
    parse,
    render,
)
from launcher.errors import ConfigError


def load(text: str) -> EnvRootSettings:
    """The settings of a config document's text (launcher.config hands parse the table)."""
    return parse(Path("/c.toml"), tomllib.loads(text).get("envroot", {}))


def test_absent_table_gives_the_defaults() -> None:
    assert load("") == EnvRootSettings()


def test_extra_master_files_extend_the_defaults() -> None:
    got = load('[envroot]\nextra_master_files = ["/etc/gitconfig"]\n')
    assert got.master_files == (*DEFAULT_MASTER_FILES, "/etc/gitconfig")
    assert parse(Path("/c.toml"), render(got)) == got
    assert render(EnvRootSettings()) == {}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('binds = ["home"]', "envroot.binds"),
        ('binds = ["/home/../etc"]', "envroot.binds"),
        ('binds = "/home"', "envroot.binds"),
        ('late = "sometimes"', "envroot.late"),
        ("late_timeout_s = 0", "envroot.late_timeout_s"),
        ("typo = 1", "envroot.typo"),
    ],
)
def test_a_bad_value_names_its_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(f"[envroot]\n{text}\n")
    assert caught.value.key == key


def test_nodes_get_what_they_use_and_the_job_policy_wins() -> None:
    settings = EnvRootSettings(binds=("/home",), late="fetch")
    node = NodeEnvSettings.from_wire(settings.for_nodes(late="fail"))
    assert node.binds == ("/home",) and node.late == "fail"
    assert NodeEnvSettings.from_wire(None).late == "fail"  # an older master: nothing late


def test_fallback_allowed_respects_policy_and_closed_prefixes() -> None:
    node = NodeEnvSettings(late="fetch", no_fallback=("/proc", "/tmp"))
    assert node.fallback_allowed("/usr/bin/date")
    assert not node.fallback_allowed("/proc/1/environ")
    assert not node.fallback_allowed("/tmp")
    assert node.fallback_allowed("/tmpfoo")
    assert not NodeEnvSettings(late="fail").fallback_allowed("/usr/bin/date")
    # a site bind missing on a node is not filled from the master's copy
    bound = NodeEnvSettings(late="fetch", binds=("/scratch",))
    assert not bound.fallback_allowed("/scratch/run1/input.dat")
    assert bound.fallback_allowed("/scratchpad")


def test_a_bad_prepare_field_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="late"):
        NodeEnvSettings.from_wire({"late": 3})
