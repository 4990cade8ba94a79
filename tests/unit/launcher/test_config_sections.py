"""The optional tables of config.toml, parsed once by ``launcher.config.load``:
their defaults, one ConfigError naming the file and the dotted key for a bad
value, an unknown table refused, and ``render`` the inverse of ``parse``."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from launcher import config as cfg
from launcher.cli import beoctl
from launcher.envconfig import EnvRootSettings
from launcher.errors import ConfigError
from launcher.master.jobsettings import USER_QUOTA_BYTES, JobsSettings
from launcher.slurm.settings import SlurmSettings
from tests.unit.launcher.test_config import GOOD

BASE: dict[str, Any] = GOOD  # the same good [state] and [services]
BOOT = {"interface": "eth1", "network": "10.9.0.0/16", "master_address": "10.9.0.1"}
#: One good table of each optional section, with a value off its default.
SECTIONS: dict[str, dict[str, Any]] = {
    "peers": {"port": 4999, "fanout": 3},
    "jobs": {"allow_root": True, "node_timeout_s": 30.0, "node_message_rate": 500},
    "store": {"user_quota_bytes": 0},
    "slurm": {"partition": "p1", "submit": False},
    "boot": BOOT,
    "envroot": {"binds": ["/home"], "late": "fail"},
    "cluster": {"bridge": "br7", "subnet": "10.79.7.0/24"},
    "nfs": {"exports": ["/srv/data"], "port": 12049},
}


def load(tmp_path: Path, **tables: Any) -> cfg.Config:
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps({**BASE, **tables}))
    return cfg.load(str(path))


def test_absent_tables_take_their_defaults(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.jobs == JobsSettings(False, 300.0, USER_QUOTA_BYTES)
    assert config.slurm == SlurmSettings()
    assert config.boot is None  # the master boots nobody
    assert config.envroot == EnvRootSettings()
    assert config.cluster == cfg.ClusterSettings(None, None, None, None)
    assert config.peers == cfg.PeerSettings()
    assert config.nfs is None  # the master serves no NFS
    assert config.given == frozenset()
    assert cfg.render(config) == BASE


def test_every_section_is_parsed_once_into_its_field(tmp_path: Path) -> None:
    config = load(tmp_path, **SECTIONS)
    assert config.jobs == JobsSettings(True, 30.0, 0, 500.0)
    assert (config.slurm.partition, config.slurm.submit) == ("p1", False)
    assert config.boot is not None and config.boot.master_address == IPv4Address("10.9.0.1")
    assert (config.envroot.binds, config.envroot.late) == (("/home",), "fail")
    assert config.cluster == cfg.ClusterSettings(bridge="br7", subnet="10.79.7.0/24")
    assert config.nfs is not None and config.nfs.exports == ("/srv/data",)
    assert config.given == set(SECTIONS)


def test_render_round_trips_every_section(tmp_path: Path) -> None:
    config = load(tmp_path, **SECTIONS)
    assert cfg.parse(config.path, cfg.render(config)) == config
    # A table given with only default values stays given: [slurm] means Slurm.
    bare = load(tmp_path, slurm={})
    assert "slurm" in bare.given
    assert cfg.parse(bare.path, cfg.render(bare)) == bare


@pytest.mark.parametrize(
    ("tables", "key", "expected"),
    [
        ({"jobs": {"allow_root": "yes"}}, "jobs.allow_root", "true or false"),
        ({"jobs": {"node_timeout_s": 0}}, "jobs.node_timeout_s", "seconds > 0"),
        ({"jobs": {"node_message_rate": 0.5}}, "jobs.node_message_rate", "a second >= 1"),
        ({"jobs": {"allow_roots": True}}, "jobs.allow_roots", "unknown key"),
        ({"jobs": 3}, "jobs", "expected a table"),
        ({"store": {"user_quota_bytes": -1}}, "store.user_quota_bytes", "bytes >= 0"),
        ({"store": []}, "store", "expected a table"),
        ({"slurm": {"partition": "a b"}}, "slurm.partition", "letters, digits"),
        ({"slurm": "beolaunch"}, "slurm", "expected a table"),
        ({"boot": {**BOOT, "mode": "relay"}}, "boot.mode", "static, pool, proxy"),
        ({"boot": {**BOOT, "ra": 1}}, "boot.ra", "true or false"),
        ({"boot": True}, "boot", "expected a table"),
        ({"envroot": {"late": "sometimes"}}, "envroot.late", "'fetch' or 'fail'"),
        ({"envroot": {"binds": "/home"}}, "envroot.binds", "list of paths"),
        ({"cluster": {"subnet": 7}}, "cluster.subnet", "expected a string"),
        ({"cluster": {"bridges": "b"}}, "cluster.bridges", "unknown key"),
        ({"peers": {"fanout": 0}}, "peers.fanout", "integer >= 1"),
        ({"nfs": {"server": "knfsd"}}, "nfs.server", "ganesha, kernel, auto"),
        ({"nfs": []}, "nfs", "expected a table"),
    ],
)
def test_a_bad_value_is_one_error_naming_file_and_key(
    tmp_path: Path, tables: dict[str, Any], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **tables)
    assert (caught.value.path, caught.value.key) == (tmp_path / "config.toml", key)
    assert str(caught.value).startswith(f"{tmp_path / 'config.toml'}: key '{key}': ")
    assert expected in caught.value.problem


def test_a_boot_error_keeps_bootsvc_words(tmp_path: Path) -> None:
    bad = {**BOOT, "pool_first": "10.9.0.50", "pool_last": "10.9.0.40"}
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, boot=bad)
    assert caught.value.key == "boot.pool_last"
    assert caught.value.problem == "10.9.0.40 comes before pool_first 10.9.0.50"


def test_an_unknown_table_is_named_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, slrum={"partition": "p"})
    assert caught.value.key == "slrum"
    assert caught.value.problem == (
        "unknown table; expected one of "
        "state, services, peers, jobs, store, slurm, boot, envroot, cluster, nfs"
    )


def test_beoctl_init_writes_a_config_that_loads_and_round_trips(tmp_path: Path) -> None:
    assert beoctl.main(["init", "--state-dir", str(tmp_path / "beo")]) == 0
    config = cfg.load(str(tmp_path / "beo" / "config.toml"))
    assert config.given == frozenset()
    assert cfg.parse(config.path, cfg.render(config)) == config
