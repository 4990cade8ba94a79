"""The site files the master copies into job roots: symlink chains kept,
directories taken whole, only public files, each hashed once per version."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachefs.manifest import Entry
from cachefs.store import Store
from launcher.master.sitefiles import SiteFiles


@pytest.fixture
def site() -> Iterator[Path]:
    """A world-searchable directory standing for the master's / (pytest's tmp_path
    is under a 0700 directory, which would make every file private)."""
    top = Path(tempfile.mkdtemp(prefix="beo-site-", dir="/tmp"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


def _file(path: Path, body: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    path.chmod(mode)
    return path


def _by_path(entries: list[Entry]) -> dict[str, Entry]:
    return {e.path: e for e in entries}


def test_a_symlink_chain_is_kept_with_the_file_it_ends_at(site: Path, tmp_path: Path) -> None:
    zone = _file(site / "usr/share/zoneinfo/Europe/Paris", b"TZif-paris")
    (site / "usr/share/zoneinfo/posix").symlink_to(".")  # a link in the middle of the path
    (site / "etc").mkdir()
    (site / "etc/localtime").symlink_to(site / "usr/share/zoneinfo/posix/Europe/Paris")
    store = Store(tmp_path / "store")
    found = _by_path(SiteFiles(store, [f"{site}/etc/localtime"]).entries())
    assert found[f"{site}/etc/localtime"].kind == "symlink"
    assert found[f"{site}/etc/localtime"].target == str(
        site / "usr/share/zoneinfo/posix/Europe/Paris"
    )
    assert found[f"{site}/usr/share/zoneinfo/posix"].target == "."
    entry = found[str(zone)]
    assert (entry.kind, entry.mode, entry.size) == ("file", 0o644, len(b"TZif-paris"))
    assert entry.sha256 == hashlib.sha256(b"TZif-paris").hexdigest()
    assert store.has(entry.sha256)
    assert len(found) == 3


def test_a_directory_is_taken_whole_with_its_links_followed(site: Path, tmp_path: Path) -> None:
    _file(site / "usr/share/ca/a.crt", b"cert a")
    certs = site / "etc/ssl/certs"
    certs.mkdir(parents=True)
    (certs / "a.pem").symlink_to(site / "usr/share/ca/a.crt")
    (certs / "1234.0").symlink_to("a.pem")
    _file(certs / "bundle.crt", b"all certs")
    found = _by_path(SiteFiles(Store(tmp_path / "store"), [str(certs)]).entries())
    assert found[str(certs)].kind == "dir"
    assert found[f"{certs}/1234.0"].target == "a.pem"
    assert found[f"{certs}/a.pem"].target == str(site / "usr/share/ca/a.crt")
    assert found[str(site / "usr/share/ca/a.crt")].kind == "file"
    assert found[f"{certs}/bundle.crt"].kind == "file"
    assert len(found) == 5


def test_files_others_cannot_read_are_left_out_with_one_warning(
    site: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    public = _file(site / "etc/public.conf", b"ok")
    private = _file(site / "etc/private.conf", b"secret", 0o640)
    hidden = _file(site / "etc/locked/inside.conf", b"secret too")
    (site / "etc/locked").chmod(0o750)  # readable file, but its directory is not searchable
    closed = site / "etc/closed"
    closed.mkdir()
    closed.chmod(0o711)  # searchable, not listable: not taken as a directory
    paths = [str(public), str(private), str(hidden), str(closed)]
    files = SiteFiles(Store(tmp_path / "store"), paths)
    with caplog.at_level(logging.WARNING, logger="launcher.master.sitefiles"):
        assert [e.path for e in files.entries()] == [str(public)]
        (site / "etc/public.conf").touch()  # a change: the next call walks again
        assert [e.path for e in files.entries()] == [str(public)]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3, warned  # once each, not once per submission
    assert any(str(private) in w and "not world-readable" in w for w in warned)
    assert any(str(hidden) in w and "cannot search" in w for w in warned)
    assert any(str(closed) in w and "cannot list" in w for w in warned)


def test_a_missing_path_is_left_out_quietly(
    site: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="launcher.master.sitefiles"):
        assert SiteFiles(Store(tmp_path / "store"), [f"{site}/etc/none"]).entries() == []
    assert caplog.records == []


def test_a_link_to_the_root_directory_is_not_followed(site: Path, tmp_path: Path) -> None:
    (site / "etc").mkdir()
    (site / "etc/everything").symlink_to("/")
    found = SiteFiles(Store(tmp_path / "store"), [f"{site}/etc/everything"]).entries()
    assert [(e.path, e.kind) for e in found] == [(f"{site}/etc/everything", "symlink")]


def test_an_unchanged_site_is_reused_and_a_changed_file_is_read_again(
    site: Path, tmp_path: Path
) -> None:
    conf = _file(site / "etc/site.conf", b"version 1")
    certs = site / "etc/certs"
    certs.mkdir()
    store = Store(tmp_path / "store")
    files = SiteFiles(store, [str(conf), str(certs)])
    first = files.entries()
    assert files.entries() == first
    conf.write_bytes(b"version 2, longer")
    (certs / "new.pem").symlink_to(conf)  # a new entry in a directory taken whole
    found = _by_path(files.entries())
    assert found[str(conf)].sha256 == hashlib.sha256(b"version 2, longer").hexdigest()
    assert found[f"{certs}/new.pem"].target == str(conf)
    os.unlink(certs / "new.pem")
    assert f"{certs}/new.pem" not in _by_path(files.entries())


def test_an_object_gone_from_the_store_is_stored_again(site: Path, tmp_path: Path) -> None:
    conf = _file(site / "etc/site.conf", b"kept")
    store = Store(tmp_path / "store")
    files = SiteFiles(store, [str(conf)])
    (entry,) = files.entries()
    assert entry.sha256 is not None
    store.path(entry.sha256).unlink()  # as 'beoctl store gc' would
    assert files.entries() == [entry]
    assert store.has(entry.sha256)
