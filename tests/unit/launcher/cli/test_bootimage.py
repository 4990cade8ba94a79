"""What build-stage2 and build-stage3 share: busybox, and storing or writing the image."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bootsvc.errors import Stage2BuildError, Stage3BuildError
from launcher.cli import beoctl
from launcher.cli.beoctl import bootimage
from launcher.cli.context import CliContext
from launcher.config import CONFIG_ENV


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliContext:
    state_dir = tmp_path / "beo"
    assert beoctl.main(["init", "--state-dir", str(state_dir)]) == 0
    monkeypatch.setenv(CONFIG_ENV, str(state_dir / "config.toml"))
    return CliContext(str(state_dir / "config.toml"))


@pytest.mark.parametrize("error", [Stage2BuildError, Stage3BuildError])
def test_no_busybox_is_the_stages_own_error_saying_what_to_install(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Stage2BuildError | Stage3BuildError],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(error) as info:
        bootimage.find_busybox(None, error)
    assert info.value.what == "busybox" and "busybox-static" in info.value.problem
    given = tmp_path / "busybox"
    assert bootimage.find_busybox(given, error) == given


def test_out_writes_the_file_and_stores_nothing(
    cli: CliContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stage2.img"
    bootimage.store_or_write(
        cli, b"image", stage="stage2", release="6.1.0", name=None, built_from={}, out=out
    )
    sha = hashlib.sha256(b"image").hexdigest()
    assert out.read_bytes() == b"image"
    assert capsys.readouterr().out == f"wrote {out}: 5 bytes, sha256 {sha}\n"
    assert beoctl.main(["boot", "images", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_stored_under_the_default_name_and_reported(
    cli: CliContext, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = hashlib.sha256(b"stage three").hexdigest()
    bootimage.store_or_write(
        cli, b"stage three", stage="stage3", release="6.1.0", name=None, built_from={}, out=None
    )
    name = f"stage3-6.1.0-{sha[:12]}"
    assert capsys.readouterr().out == f"stage 3 image {name}: 11 bytes, sha256 {sha}\n"
    assert beoctl.main(["boot", "images", "--json", "--kind", "stage3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["sha256"], r["size"]) for r in rows] == [(name, sha, 11)]
