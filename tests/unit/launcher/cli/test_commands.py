"""The console scripts, called in-process through main(argv)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from cachefs.manifest import loads
from launcher.cli import beoacct, beoctl, beonode, beostat, beosub
from launcher.config import CONFIG_ENV
from launcher.state import migrate
from launcher.state.db import make_engine, transaction
from tests.integration.state.populate import populate


def test_every_script_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    for main in (beoctl.main, beostat.main, beoacct.main, beosub.main, beonode.main):
        assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for sub in ("init", "db", "node", "nodes", "jobs", "versions", "diff", "usage", "hwreport"):
        assert f"  {sub}" in out


def test_init_then_db_current_shows_head(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert beoctl.main(["init", "--state-dir", str(state)]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert beoctl.main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == f"{migrate.head_revision()} (head)"


def test_no_config_says_run_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "absent.toml"))
    assert beostat.main(["nodes"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("beostat: no configuration at")
    assert "run 'beoctl init'" in err


def test_config_flag_beats_environment(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "absent.toml"))
    assert beoctl.main(["--config", str(state / "config.toml"), "db", "current"]) == 0
    assert "(head)" in capsys.readouterr().out


def test_old_database_is_refused_by_commands(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(f"sqlite:///{state / 'state.db'}")
    migrate.downgrade(engine, "base")
    engine.dispose()
    assert beostat.main(["nodes"]) == 1
    assert "run 'beoctl init' or 'beoctl db upgrade'" in capsys.readouterr().err
    assert beoctl.main(["db", "upgrade"]) == 0
    assert "->" in capsys.readouterr().out
    assert beostat.main(["nodes"]) == 0


def test_node_add_and_list_json(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert beoctl.main(["node", "add", "n1", "--mac", "52:54:00:AA:BB:01"]) == 0
    assert beoctl.main(["node", "add", "n1"]) == 1
    assert "node n1 already exists" in capsys.readouterr().err
    assert beostat.main(["nodes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["mac"], r["state"]) for r in rows] == [
        ("n1", "52:54:00:aa:bb:01", "down")
    ]


def test_beoacct_rejects_bad_sha_and_needs_one_selector(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert beoacct.main(["jobs", "--sha256", "xyz"]) == 1
    assert "64 lowercase hex" in capsys.readouterr().err
    assert beoacct.main(["jobs"]) == 2
    assert "exactly one of --sha256 or --path" in capsys.readouterr().err


def test_beoacct_csv_has_header(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert beoacct.main(["usage", "--by", "node", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "node,jobs,nodes,objects_total,objects_hit,hit_rate,bytes_total,bytes_fetched,"
        "bytes_from_master,bytes_from_peers,fill_seconds"
    ]


def test_hwreport_json_has_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert beonode.main(["hwreport", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cpus_logical"] >= 1
    assert report["memory_bytes"] > 0
    assert "lo" in [n["name"] for n in report["nics"]]


def test_db_downgrade_then_upgrade(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = migrate.head_revision()
    assert beoctl.main(["db", "downgrade", "base"]) == 0
    assert capsys.readouterr().out.strip() == f"{head} -> (none)"
    assert beoctl.main(["db", "current"]) == 0
    assert "(none) (head is" in capsys.readouterr().out
    assert beoctl.main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"(none) -> {head}"
    assert beoctl.main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"already at {head}"
    assert beoctl.main(["db", "downgrade", "nonsense"]) == 1
    assert "cannot move database" in capsys.readouterr().err


def test_closure_json_is_a_valid_manifest_with_real_hashes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert beoctl.main(["closure", "--json", "--", "true"]) == 0
    out = capsys.readouterr().out
    manifest = loads(out)
    assert manifest.id == json.loads(out)["id"]
    real = os.path.realpath(shutil.which("true") or "")
    entry = manifest.get(real)
    assert entry is not None and entry.kind == "file"
    assert entry.sha256 == hashlib.sha256(Path(real).read_bytes()).hexdigest()
    libc = [e for e in manifest if e.path.endswith("/libc.so.6")]
    assert libc and all(e.kind == "file" for e in libc)


def test_closure_names_a_missing_program(capsys: pytest.CaptureFixture[str]) -> None:
    assert beoctl.main(["closure", "no-such-program-here"]) == 1
    assert "beoctl: program 'no-such-program-here' not found" in capsys.readouterr().err


def test_beoacct_usage_json_keys_jobs_by_number(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(f"sqlite:///{state / 'state.db'}")
    with transaction(engine) as session:
        cluster = populate(session)
    engine.dispose()
    assert beoacct.main(["usage", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["job"] for r in rows] == [cluster.job1, cluster.job2, cluster.job3]
    assert rows[1]["objects_hit"] == 1 and rows[1]["objects_total"] == 8


def test_beosub_output_files_go_with_batch(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No slurm.conf in this state dir: beosub runs jobs itself, where -o needs --batch.
    assert beosub.main(["-o", "out-%j.txt", "--", "/bin/true"]) == 2
    assert "-o/--output and -e/--error go with --batch" in capsys.readouterr().err


def test_beosub_slurm_options_need_slurm(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert beosub.main(["--scheduler", "local", "-t", "5", "--", "/bin/true"]) == 2
    assert "--time goes with Slurm" in capsys.readouterr().err
    assert beosub.main(["--slurm-opt=--mem=1G", "--", "/bin/true"]) == 2
    assert "--slurm-opt goes with Slurm" in capsys.readouterr().err


def test_beosub_dry_run_on_slurm_prints_sbatch_and_script(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--scheduler", "slurm", "--dry-run", "-N", "2", "-J", "demo", "--", "/bin/echo", "hi"]
    assert beosub.main(argv) == 0
    out = capsys.readouterr().out
    assert "nothing submitted" in out
    sbatch = next(line for line in out.splitlines() if line.startswith("sbatch --parsable"))
    assert "--comment=beolaunch:manifest=" in sbatch
    assert "--nodes=2" in sbatch and "--job-name=demo" in sbatch
    assert 'step --slurm-job "$SLURM_JOB_ID" -- /bin/echo hi' in out


def test_beosub_batch_without_a_master_says_so(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert beosub.main(["--batch", "--", "/bin/true"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("beosub: master at ") and "cannot connect" in err


def test_a_boot_service_error_is_one_line_and_its_exit_code(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_kernel = tmp_path / "notes.txt"
    not_a_kernel.write_text("not a .deb\n")
    capsys.readouterr()
    assert beoctl.main(["boot", "import-kernel", str(not_a_kernel)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"beoctl: kernel import from {not_a_kernel}: not a linux-image .deb file or a "
        "directory with boot/ and lib/modules/\n"
    )
