"""``beoctl slurm config``, called in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.cli import beoctl


def test_config_prints_the_fragment_with_the_configured_timeout(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = state / "config.toml"
    config.write_text(config.read_text() + "\n[slurm]\nprolog_timeout = 33\n")
    capsys.readouterr()
    assert beoctl.main(["slurm", "config"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    hooks = state / "slurm" / "hooks"
    assert lines == [
        f"Prolog={hooks / 'prolog'}",
        f"Epilog={hooks / 'epilog'}",
        "PrologFlags=Alloc",
        "PrologEpilogTimeout=33",
        "SchedulerParameters=batch_sched_delay=0",
    ]
    assert not hooks.exists()


def test_config_write_hooks_writes_wrappers_for_this_config(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = tmp_path / "hooks"
    assert beoctl.main(["slurm", "config", "--hooks-dir", str(hooks), "--write-hooks"]) == 0
    assert f"Prolog={hooks / 'prolog'}" in capsys.readouterr().out
    last = (hooks / "prolog").read_text().splitlines()[-1]
    assert last.endswith(f"--config {state / 'config.toml'} slurm prolog")


def test_bad_slurm_table_is_a_one_line_error(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = state / "config.toml"
    config.write_text(config.read_text() + "\n[slurm]\nslurmd_port = 0\n")
    assert beoctl.main(["slurm", "config"]) == 1
    assert "slurm.slurmd_port" in capsys.readouterr().err
