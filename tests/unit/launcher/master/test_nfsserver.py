"""The NFS server's checks and records without a server: exports refused with
the reason, the kernel path's files and exportfs, ganesha's pid file not
trusted alone, what status says when nothing is served. (Serving for real:
tests/integration/test_nfs_server.py.)"""

from __future__ import annotations

import dataclasses
import os
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from launcher import config as cfg
from launcher.errors import NfsServerError
from launcher.master import ganesha, nfskernel, nfsserver
from launcher.master.daemon import nfs_unserved
from launcher.nfsconfig import NfsSettings
from tests.unit.launcher.test_config import GOOD


def _settings(*exports: Path) -> NfsSettings:
    return NfsSettings(
        ip_address("10.9.0.1"), ip_network("10.9.0.0/24"), tuple(str(p) for p in exports)
    )


def test_a_real_directory_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    nfsserver.check_exports(_settings(tmp_path / "home"), tmp_path / "state")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "not a directory"),
        (lambda p: p.symlink_to(p.parent), "is a symlink"),
    ],
)
def test_an_export_that_is_not_a_plain_directory_is_refused(
    tmp_path: Path, make: object, expected: str
) -> None:
    export = tmp_path / "home"
    make(export)  # type: ignore[operator]
    with pytest.raises(NfsServerError) as caught:
        nfsserver.check_exports(_settings(export), tmp_path / "state")
    assert caught.value.path == str(export)
    assert expected in str(caught.value)


def test_a_symlink_on_the_way_is_refused_with_the_real_path(tmp_path: Path) -> None:
    (tmp_path / "real" / "home").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(NfsServerError) as caught:
        nfsserver.check_exports(_settings(tmp_path / "link" / "home"), tmp_path / "state")
    assert f"it is {tmp_path / 'real' / 'home'}" in str(caught.value)


def test_the_state_dir_is_refused_even_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path)
    with pytest.raises(NfsServerError) as caught:
        # The config names the state dir through the link; the export is its parent.
        nfsserver.check_exports(_settings(tmp_path), tmp_path / "alias" / "state")
    assert "state dir" in str(caught.value)


def test_kernel_apply_writes_the_file_and_runs_exportfs(tmp_path: Path) -> None:
    exports = tmp_path / "exports.d" / "beolaunch.exports"
    marker = tmp_path / "ran"
    nfskernel.apply("/home 10.9.0.0/24(rw)\n", exports, ["touch", str(marker)])
    assert exports.read_text() == "/home 10.9.0.0/24(rw)\n"
    assert marker.exists()
    assert nfskernel.remove(exports, ["true"]) is True
    assert not exports.exists()
    assert nfskernel.remove(exports, ["true"]) is False


def test_kernel_exportfs_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(NfsServerError) as caught:
        nfskernel.apply("x\n", tmp_path / "e", ["sh", "-c", "echo bad line >&2; exit 1"])
    assert "failed (1): bad line" in str(caught.value)


def test_kernel_is_usable_only_with_nfsd(tmp_path: Path) -> None:
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tproc\n\text4\n")
    assert nfskernel.usable(filesystems) is False


def test_a_pid_file_of_another_program_is_not_ganesha(tmp_path: Path) -> None:
    files = ganesha.GaneshaFiles(tmp_path)
    files.pid.write_text(f"{os.getpid()}\n")
    assert ganesha.running_pid(files) is None
    files.pid.write_text("garbage\n")
    assert ganesha.running_pid(files) is None


def test_ganesha_complaint_leaves_out_what_it_always_says(tmp_path: Path) -> None:
    log = tmp_path / "ganesha.log"
    log.write_text(
        "old : x : vm : g[main] f :NFS STARTUP :CRIT :an old complaint\n"
        "d : e : vm : g[main] gsh_dbus_pkginit :DBUS :CRIT :dbus_bus_get failed\n"
        "d : e : vm : g[main] f :CONFIG :CRIT :No IP address found for 10.1.1.1\n"
        "d : e : vm : g[main] main :NFS STARTUP :FATAL :Fatal errors.  Server exiting...\n"
    )
    offset = len(log.read_text().splitlines()[0]) + 1
    assert ganesha._complaint(log, offset) == (
        "No IP address found for 10.1.1.1; Fatal errors.  Server exiting..."
    )


def _config(tmp_path: Path, nfs: NfsSettings | None) -> cfg.Config:
    base = cfg.parse(tmp_path / "config.toml", GOOD)
    return dataclasses.replace(base, state_dir=tmp_path, nfs=nfs)


def test_apply_without_an_nfs_table_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(NfsServerError) as caught:
        nfsserver.apply(_config(tmp_path, None))
    assert "has no [nfs] table" in str(caught.value)


def test_status_with_nothing_served(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    now = nfsserver.status(_config(tmp_path, _settings(tmp_path / "home")))
    assert (now.served, now.running, now.pid, now.listening) == (None, False, None, False)
    assert now.pending is True  # [nfs] is there, nothing serves it
    assert nfsserver.status(_config(tmp_path, None)).pending is False


def test_the_master_says_at_start_when_nothing_serves_its_nfs(tmp_path: Path) -> None:
    """Booted nodes mount the exports by default: a master whose [nfs] nobody
    serves says so in its log, naming the command that serves it."""
    (tmp_path / "home").mkdir()
    said = nfs_unserved(_config(tmp_path, _settings(tmp_path / "home")))
    assert said is not None and "no NFS server runs" in said and "beoctl nfs apply" in said
    assert nfs_unserved(_config(tmp_path, None)) is None  # no [nfs]: nothing to say


def test_an_unreadable_record_is_no_record(tmp_path: Path) -> None:
    (tmp_path / nfsserver.APPLIED).write_text('{"server": "ganesha"')
    assert nfsserver.load_served(tmp_path) is None
