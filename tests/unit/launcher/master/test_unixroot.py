"""The master's /etc added to a submission: generated files, site files, the
user's entries at those paths replaced, the same id for the same user twice."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from sqlalchemy import Engine, select

from bootsvc.settings import BootSettings
from cachefs.manifest import Entry, Manifest, build
from cachefs.store import Store
from launcher import config as cfg
from launcher.config import Config
from launcher.envconfig import EnvRootSettings
from launcher.errors import ConfigError
from launcher.master.unixroot import UnixRoot, master_host, merge
from launcher.state.db import make_engine, transaction
from launcher.state.migrate import upgrade
from launcher.state.models import StoredObject
from launcher.state.nodes import add_node
from launcher.state.record import record_submitted_manifest, record_system_objects

#: A system account every Debian has, standing for the job's user.
USER = pwd.getpwnam("daemon")
BODY = b"#!/bin/sh\n"
SHA = hashlib.sha256(BODY).hexdigest()


def _file(path: str, body: bytes = BODY, uid: int | None = None) -> Entry:
    return Entry(path, "file", 0o644, len(body), hashlib.sha256(body).hexdigest(), uid=uid)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db'}")
    upgrade(engine)
    with transaction(engine) as session:
        add_node(session, "node2", address="10.9.0.12")
        add_node(session, "node1", address="10.9.0.11")
    yield engine
    engine.dispose()


@pytest.fixture
def site() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="beo-site-", dir="/tmp"))
    top.chmod(0o755)
    (top / "etc").mkdir()
    (top / "etc/site.conf").write_bytes(b"site\n")
    (top / "etc/site.conf").chmod(0o644)
    try:
        yield top
    finally:
        shutil.rmtree(top)


def _rig(engine: Engine, tmp_path: Path, site: Path) -> tuple[UnixRoot, Store]:
    store = Store(tmp_path / "store")
    settings = EnvRootSettings(master_files=(f"{site}/etc/site.conf",))
    return UnixRoot(engine, store, settings, ("10.9.0.1", "master")), store


def _body(store: Store, manifest: Manifest, path: str) -> str:
    entry = manifest.get(path)
    assert entry is not None and entry.sha256 is not None and entry.uid is None
    with store.open(entry.sha256) as f:
        return f.read().decode()


def test_passwd_group_and_hosts_are_generated_for_the_job_user(
    engine: Engine, tmp_path: Path, site: Path
) -> None:
    unixroot, store = _rig(engine, tmp_path, site)
    manifest = build("/bin/prog", [_file("/bin/prog")], owner=USER.pw_uid)
    got = unixroot.augment(manifest).manifest
    assert got.owner == USER.pw_uid and got.get("/bin/prog") == manifest.get("/bin/prog")
    users = [line.split(":")[0] for line in _body(store, got, "/etc/passwd").splitlines()]
    assert users == ["root", "daemon"]  # nobody else's name
    assert f"daemon:x:{USER.pw_uid}:{USER.pw_gid}:" in _body(store, got, "/etc/passwd")
    groups = _body(store, got, "/etc/group").splitlines()
    names = {g.split(":")[0] for g in groups}
    gids = os.getgrouplist(USER.pw_name, USER.pw_gid)
    assert names == {"root"} | {grp.getgrgid(g).gr_name for g in gids}
    assert all(line.split(":")[3] in ("", "daemon") for line in groups)
    hosts = _body(store, got, "/etc/hosts").splitlines()
    assert hosts[-3:] == ["10.9.0.1\tmaster", "10.9.0.11\tnode1", "10.9.0.12\tnode2"]
    assert got.get(f"{site}/etc/site.conf") is not None
    assert all(e.mode == 0o644 for p in ("/etc/passwd", "/etc/group") if (e := got.get(p)))


def test_the_same_user_gets_the_same_manifest_id_twice(
    engine: Engine, tmp_path: Path, site: Path
) -> None:
    unixroot, _store = _rig(engine, tmp_path, site)
    manifest = build("/bin/prog", [_file("/bin/prog")], owner=USER.pw_uid)
    first = unixroot.augment(manifest)
    assert unixroot.augment(manifest) == first
    assert first.manifest.id != manifest.id  # the /etc is part of what ran
    with transaction(engine) as session:
        add_node(session, "node3", address="10.9.0.13")
    assert unixroot.augment(manifest).manifest.id != first.manifest.id  # a new node in hosts


def test_a_root_job_lists_root_alone(engine: Engine, tmp_path: Path, site: Path) -> None:
    unixroot, store = _rig(engine, tmp_path, site)
    got = unixroot.augment(build("/bin/prog", [_file("/bin/prog")], owner=0)).manifest
    assert [line.split(":")[0] for line in _body(store, got, "/etc/passwd").splitlines()] == [
        "root"
    ]


def test_the_users_own_etc_files_are_replaced(engine: Engine, tmp_path: Path, site: Path) -> None:
    unixroot, store = _rig(engine, tmp_path, site)
    own = USER.pw_uid
    manifest = build(
        "/bin/prog",
        [
            _file("/bin/prog"),
            _file("/etc/passwd", b"root::0:0::/:/bin/sh\n", uid=own),
            _file("/etc/hostname", b"forged\n"),  # a node file: the node's own wins
            _file("/etc/app.conf", b"mine\n"),  # none of the master's: kept
        ],
        owner=own,
    )
    got = unixroot.augment(manifest).manifest
    assert "root:x:0:0:" in _body(store, got, "/etc/passwd")
    assert got.get("/etc/hostname") is None
    assert got.get("/etc/app.conf") == manifest.get("/etc/app.conf")


def test_merge_drops_user_entries_at_under_and_in_the_way_of_the_masters() -> None:
    user = build(
        "/bin/prog",
        [
            _file("/bin/prog"),
            Entry("/usr", "symlink", 0o777, target="/tmp/evil"),  # where a directory must be
            Entry("/etc/ssl/certs", "dir", 0o777),
            _file("/etc/ssl/certs/evil.pem"),  # under a directory the master ships whole
            _file("/etc/ssl/mine.cnf"),  # beside it: kept
        ],
        owner=1000,
    )
    ours = [
        Entry("/etc/ssl/certs", "dir", 0o755),
        Entry("/etc/ssl/certs/a.pem", "symlink", 0o777, target="/usr/share/ca/a.crt"),
        _file("/usr/share/ca/a.crt", b"a"),
    ]
    got = merge(user, ours, ["/etc/ssl/certs", "/etc/timezone"])
    assert sorted(e.path for e in got) == [
        "/bin/prog",
        "/etc/ssl/certs",
        "/etc/ssl/certs/a.pem",
        "/etc/ssl/mine.cnf",
        "/usr/share/ca/a.crt",
    ]
    assert got.get("/etc/ssl/certs") == ours[0]


def test_the_masters_objects_count_against_no_users_quota(
    engine: Engine, tmp_path: Path, site: Path
) -> None:
    unixroot, _store = _rig(engine, tmp_path, site)
    augmented = unixroot.augment(build("/bin/prog", [_file("/bin/prog")], owner=USER.pw_uid))
    with transaction(engine) as session:
        record_system_objects(session, augmented.objects)
        record_submitted_manifest(session, augmented.manifest)
    with transaction(engine, readonly=True) as session:
        owners = dict(session.execute(select(StoredObject.sha256, StoredObject.owner_uid)).all())
    assert owners[SHA] == USER.pw_uid  # the user's own file
    assert len(augmented.objects) == 4  # passwd, group, hosts, site.conf
    assert all(owners[sha] is None for sha in augmented.objects)


def _config(tmp_path: Path, control: str, extra: str = "") -> Config:
    text = (
        f'[state]\ndir = "{tmp_path}"\ndatabase = "sqlite:///{tmp_path}/db"\n'
        f'secret_file = "{tmp_path}/secret"\n'
        + "".join(
            f'[services.{name}]\naddress = "{control}"\nport = {4870 + i}\n'
            for i, name in enumerate(cfg.SERVICES)
        )
        + extra
    )
    (tmp_path / "config.toml").write_text(text)
    return cfg.load(str(tmp_path / "config.toml"))


def test_the_master_is_in_hosts_at_the_address_nodes_reach_it_at(tmp_path: Path) -> None:
    name = socket.gethostname()
    assert master_host(_config(tmp_path, "10.1.0.1"), None) == ("10.1.0.1", name)
    virtual = _config(tmp_path, "0.0.0.0", '[cluster]\nsubnet = "10.96.7.0/24"\n')
    assert master_host(virtual, None) == ("10.96.7.1", name)
    assert master_host(_config(tmp_path, "0.0.0.0"), None) is None
    boot = SimpleNamespace(master_address=IPv4Address("10.2.0.1"))
    assert master_host(virtual, cast(BootSettings, boot)) == ("10.2.0.1", name)
    with pytest.raises(ConfigError, match=r"cluster\.subnet"):
        master_host(_config(tmp_path, "0.0.0.0", '[cluster]\nsubnet = "nonsense"\n'), None)
