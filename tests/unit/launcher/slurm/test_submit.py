"""What beosub hands Slurm: exact sbatch/srun argv and the generated batch script."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.errors import SlurmSubmitError
from launcher.slurm import submit
from launcher.slurm.paths import SlurmPaths
from launcher.slurm.settings import SlurmSettings
from launcher.slurm.submit import SlurmOptions

MID = "ab" * 32
BEONODE = Path("/opt/beo/bin/beonode")


def test_sbatch_argv_carries_the_comment_then_the_options_in_order() -> None:
    options = SlurmOptions(
        nodes=2,
        ntasks=4,
        time="10:00",
        partition="p1",
        job_name="demo",
        output="o-%j",
        error="e-%j",
        array="0-3",
        dependency="afterok:7",
        constraint="beolaunch-rt-0123456789ab",
        extra=("--mem=1G", "--exclusive"),
    )
    assert submit.sbatch_argv(MID, options) == [
        f"--comment=beolaunch:manifest={MID}",
        "--nodes=2",
        "--ntasks=4",
        "--time=10:00",
        "--partition=p1",
        "--job-name=demo",
        "--output=o-%j",
        "--error=e-%j",
        "--array=0-3",
        "--dependency=afterok:7",
        "--constraint=beolaunch-rt-0123456789ab",
        "--mem=1G",
        "--exclusive",
    ]
    assert submit.sbatch_argv(MID, SlurmOptions()) == [f"--comment=beolaunch:manifest={MID}"]


def test_comment_is_exactly_the_prefix_and_64_hex() -> None:
    assert submit.comment(MID) == "beolaunch:manifest=" + MID
    with pytest.raises(SlurmSubmitError, match="64 lowercase hex"):
        submit.comment("AB" * 32)


def test_a_passed_comment_is_refused() -> None:
    with pytest.raises(SlurmSubmitError, match="carries its Beolaunch manifest"):
        submit.sbatch_argv(MID, SlurmOptions(extra=("--comment=mine",)))


def test_array_needs_a_batch_job() -> None:
    with pytest.raises(SlurmSubmitError, match="--array"):
        submit.srun_argv(MID, SlurmOptions(array="1-2"), BEONODE, ["/bin/true"])


def test_batch_script_runs_one_step_through_beonode(tmp_path: Path) -> None:
    script = submit.batch_script(BEONODE, ["/opt/my prog", "a b", "$HOME"], label=True)
    assert script.startswith("#!/bin/sh\n")
    last = script.splitlines()[-1]
    assert last == (
        "exec srun --label /opt/beo/bin/beonode step --slurm-job "
        "\"$SLURM_JOB_ID\" -- '/opt/my prog' 'a b' '$HOME'"
    )
    # The shell gives srun exactly these words (srun replaced by echo-like printf).
    path = tmp_path / "job.sh"
    path.write_text(script.replace("exec srun", "exec printf '%s\\n'"))
    out = subprocess.run(
        ["/bin/sh", str(path)], env={"SLURM_JOB_ID": "77"}, capture_output=True, text=True
    ).stdout
    assert out.splitlines() == [
        "--label",
        str(BEONODE),
        "step",
        "--slurm-job",
        "77",
        "--",
        "/opt/my prog",
        "a b",
        "$HOME",
    ]


def test_srun_argv_expands_the_job_id_in_each_task() -> None:
    argv = submit.srun_argv(MID, SlurmOptions(nodes=2), BEONODE, ["/bin/echo", "x y"], label=True)
    assert argv[:4] == ["srun", f"--comment=beolaunch:manifest={MID}", "--nodes=2", "--label"]
    shell = argv[4:]
    assert shell[:2] == ["/bin/sh", "-c"]
    # Run the shell part with printf as "beonode": it must get step --slurm-job ID -- ARGV.
    words = ["/bin/sh", "-c", shell[2].replace('exec "$0"', "exec printf '%s\\n'"), *shell[3:]]
    out = subprocess.run(words, env={"SLURM_JOB_ID": "9"}, capture_output=True, text=True).stdout
    assert out.splitlines() == ["step", "--slurm-job", "9", "--", "/bin/echo", "x y"]
    assert shell[3] == str(BEONODE)


def test_use_slurm_flag_then_setting_then_slurm_conf(tmp_path: Path) -> None:
    paths = SlurmPaths(tmp_path / "slurm")
    assert not submit.use_slurm(SlurmSettings(), paths, None)
    assert submit.use_slurm(SlurmSettings(submit=True), paths, None)
    paths.root.mkdir()
    paths.conf.write_text("ClusterName=x\n")
    assert submit.use_slurm(SlurmSettings(), paths, None)
    assert not submit.use_slurm(SlurmSettings(submit=False), paths, None)
    assert not submit.use_slurm(SlurmSettings(submit=True), paths, "local")
    assert submit.use_slurm(SlurmSettings(submit=False), paths, "slurm")


def test_slurm_env_points_at_this_state_dirs_conf_unless_set(tmp_path: Path) -> None:
    paths = SlurmPaths(tmp_path / "slurm")
    assert "SLURM_CONF" not in submit.slurm_env({"A": "1"}, paths)
    paths.root.mkdir()
    paths.conf.write_text("")
    assert submit.slurm_env({}, paths)["SLURM_CONF"] == str(paths.conf)
    assert submit.slurm_env({"SLURM_CONF": "/etc/x"}, paths)["SLURM_CONF"] == "/etc/x"
