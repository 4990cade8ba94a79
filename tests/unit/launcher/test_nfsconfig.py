"""``[nfs]``: defaults from ``[boot]``, one ConfigError naming ``nfs.KEY`` for a bad
value, ``render`` the inverse of ``parse``, and ``beoctl init`` writing it only when asked."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from bootsvc import settings as boot_settings
from bootsvc.mounts import DEFAULT_OPTIONS, SiteMount
from launcher import config as cfg
from launcher import nfsconfig
from launcher.errors import ConfigError
from launcher.initialize import initialize
from launcher.master.bootscripts import BootHttpSettings, site_mounts
from launcher.nfsconfig import NfsSettings

BOOT = boot_settings.parse(
    {"interface": "eth1", "network": "10.9.0.0/16", "master_address": "10.9.0.1"}
)
STATE = Path("/var/lib/beolaunch")
WHERE = Path("/etc/beo/config.toml")


def parse(table: dict[str, Any], boot: Any = BOOT) -> NfsSettings:
    return nfsconfig.parse(WHERE, table, boot, STATE)


def test_an_empty_table_serves_home_on_the_boot_network() -> None:
    settings = parse({})
    assert settings == NfsSettings(
        ip_address("10.9.0.1"), ip_network("10.9.0.0/16"), ("/home",), "auto", 2049
    )
    assert settings.squash == "root_squash"


def test_every_key_given() -> None:
    settings = parse(
        {
            "exports": ["/home", "/srv/data"],
            "server": "ganesha",
            "port": 12049,
            "address": "10.8.0.1",
            "clients": "10.8.0.0/24",
            "squash": "root_squash",
        }
    )
    assert settings == NfsSettings(
        ip_address("10.8.0.1"), ip_network("10.8.0.0/24"), ("/home", "/srv/data"), "ganesha", 12049
    )


@pytest.mark.parametrize(
    "table",
    [
        {},
        {"exports": ["/srv/a", "/srv/b"], "server": "kernel", "port": 2050},
        {"address": "10.8.0.1", "clients": "10.8.0.0/24"},
    ],
)
def test_render_round_trips(table: dict[str, Any]) -> None:
    settings = parse(table)
    assert parse(nfsconfig.render(settings, BOOT)) == settings
    # Without [boot] the address and network are written out.
    rendered = nfsconfig.render(settings, None)
    assert parse(rendered, None) == settings


def test_defaults_from_boot_are_not_written_out() -> None:
    assert nfsconfig.render(parse({}), BOOT) == {"exports": ["/home"]}


@pytest.mark.parametrize(
    ("table", "key", "expected"),
    [
        ({"exprts": []}, "nfs.exprts", "unknown key"),
        ({"exports": "/home"}, "nfs.exports", "list of absolute directories"),
        ({"exports": []}, "nfs.exports", "list of absolute directories"),
        ({"exports": ["home"]}, "nfs.exports", "normalised absolute path"),
        ({"exports": ["/home/../etc"]}, "nfs.exports", "normalised absolute path"),
        ({"exports": ["/home/a b"]}, "nfs.exports", "without spaces"),
        ({"exports": ['/home/"x']}, "nfs.exports", "quotes"),
        ({"exports": ["/"]}, "nfs.exports", "whole tree"),
        ({"exports": ["/var/lib"]}, "nfs.exports", "state dir"),
        ({"exports": ["/var/lib/beolaunch/store"]}, "nfs.exports", "state dir"),
        ({"exports": ["/home", "/home"]}, "nfs.exports", "twice"),
        ({"server": "knfsd"}, "nfs.server", "ganesha, kernel, auto"),
        ({"port": 0}, "nfs.port", "1-65535"),
        ({"port": True}, "nfs.port", "1-65535"),
        ({"address": "master"}, "nfs.address", "IPv4 or IPv6"),
        ({"address": 167772161}, "nfs.address", "IPv4 or IPv6"),
        ({"clients": "10.8.0.1/33"}, "nfs.clients", "one network"),
        ({"clients": "10.8.0.1/24"}, "nfs.clients", "host bits"),
        ({"clients": "0.0.0.0/0"}, "nfs.clients", "every address"),
        ({"squash": "no_root_squash"}, "nfs.squash", "remove the key"),
    ],
)
def test_a_bad_value_names_its_key(table: dict[str, Any], key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(table)
    assert (caught.value.path, caught.value.key) == (WHERE, key)
    assert expected in caught.value.problem


@pytest.mark.parametrize("key", ["address", "clients"])
def test_without_boot_address_and_clients_must_be_given(key: str) -> None:
    given = {"address": "10.8.0.1", "clients": "10.8.0.0/24"}
    del given[key]
    with pytest.raises(ConfigError) as caught:
        parse(given, None)
    assert caught.value.key == f"nfs.{key}"
    assert f"set nfs.{key}" in caught.value.problem


def test_init_writes_nfs_only_when_asked(tmp_path: Path) -> None:
    """A default [nfs] is never added: with no [[boot.mounts]], nodes mount each
    export, and an export nobody serves would keep every node out (the QEMU lab
    writes [nfs] only with exports it serves)."""
    boot = {"interface": "br0", "network": "10.9.0.0/24", "master_address": "10.9.0.1"}
    booted = initialize(tmp_path / "booted", tables=lambda: {"boot": boot}).config
    assert booted.nfs is None
    assert "[nfs]" not in (tmp_path / "booted" / "config.toml").read_text()
    served = initialize(
        tmp_path / "served", tables=lambda: {"boot": boot, "nfs": {"exports": ["/home"]}}
    ).config
    assert served.nfs == NfsSettings(ip_address("10.9.0.1"), ip_network("10.9.0.0/24"))
    assert cfg.parse(served.path, cfg.render(served)) == served


def test_booted_nodes_mount_each_export_unless_boot_mounts_says_otherwise(tmp_path: Path) -> None:
    """``[nfs]`` alone: each export at its own path from the master; another port
    goes into the options; an explicit ``[[boot.mounts]]`` (even empty) wins."""
    state = tmp_path / "state"
    initialize(state)
    config = cfg.load(str(state / cfg.CONFIG_NAME))
    assert site_mounts(config, BOOT) == ()  # no [nfs]: nothing
    served = replace(config, boot=BOOT, nfs=parse({"exports": ["/home", "/data"]}))
    assert site_mounts(served, BOOT) == (
        SiteMount("{master}:/home", "/home", "nfs4", DEFAULT_OPTIONS),
        SiteMount("{master}:/data", "/data", "nfs4", DEFAULT_OPTIONS),
    )
    answer = BootHttpSettings.of(served, BOOT, 4880).mounts  # what enroll hands a node
    assert [m.source for m in answer] == ["10.9.0.1:/home", "10.9.0.1:/data"]
    elsewhere = replace(served, nfs=parse({"port": 12049, "address": "10.9.0.5"}))
    (mount,) = site_mounts(elsewhere, BOOT)
    assert mount.source == "10.9.0.5:/home" and mount.options.endswith(",port=12049")
    none = boot_settings.parse({**boot_settings.render(BOOT), "mounts": []})
    assert site_mounts(served, none) == ()
