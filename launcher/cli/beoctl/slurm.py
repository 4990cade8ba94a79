"""``beoctl slurm``: what Slurm needs from Beolaunch (slurm.conf lines, hook scripts).

Also the Slurm half of ``beoctl cluster up --slurm``, ``cluster down`` and
``cluster status`` (:func:`start_virtual`, :func:`stop_virtual`,
:func:`daemon_rows`), so the cluster command only calls in.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from launcher import cluster as vc
from launcher.cli.context import CliContext, pass_cli
from launcher.cluster import slurmdaemons
from launcher.config import Config
from launcher.slurm import conf, runtime
from launcher.slurm.paths import SlurmPaths


def beoctl_path() -> Path:
    """The beoctl next to this Python (the one slurmd's hooks must run)."""
    return Path(sys.executable).parent / "beoctl"


@click.group()
def slurm() -> None:
    """Slurm integration: the slurm.conf lines and the prolog/epilog wrappers."""


@slurm.command("config")
@click.option(
    "--hooks-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the prolog and epilog wrappers are (default: STATE/slurm/hooks).",
)
@click.option("--write-hooks", is_flag=True, help="Also write the two wrapper scripts there.")
@pass_cli
def config_command(cli: CliContext, hooks_dir: Path | None, write_hooks: bool) -> None:
    """Print the slurm.conf lines an administrator adds on a real cluster."""
    config = cli.config()
    settings = config.slurm
    directory = (hooks_dir or SlurmPaths.of_state(config.state_dir).hooks_dir).absolute()
    if write_hooks:
        hooks = slurmdaemons.write_hooks(directory, beoctl_path(), config.path)
    else:
        hooks = conf.Hooks.in_dir(directory)
    click.echo(conf.admin_fragment(settings, hooks), nl=False)


@slurm.command("prolog")
@pass_cli
def prolog_command(cli: CliContext) -> None:
    """Admit this Slurm job on this node (run by slurmd as Prolog, as root).

    A job without beolaunch:manifest= in its comment passes untouched. Exit 1
    with the reason on stderr when the node did not admit it (Slurm drains
    the node and requeues the job)."""
    import os

    from launcher.slurm import prolog

    prolog.run(os.environ, Path(cli.config_flag) if cli.config_flag else None)


@slurm.command("epilog")
@pass_cli
def epilog_command(cli: CliContext) -> None:
    """Release this Slurm job on this node (run by slurmd as Epilog, as root):
    unpin its files, remove or keep its env root, report its exit. Idempotent."""
    import os

    from launcher.slurm import epilog

    epilog.run(os.environ, Path(cli.config_flag) if cli.config_flag else None)


@slurm.command("runtime")
@click.option("--json", "as_json", is_flag=True, help="As JSON: sha256, feature, files.")
@pass_cli
def runtime_command(cli: CliContext, as_json: bool) -> None:
    """This node's runtime hash and the Slurm feature that advertises it.

    Put the feature on the node's NodeName line (Features=...) so that jobs can
    require it: sbatch --constraint=FEATURE, beosub -C FEATURE. The virtual
    cluster's slurm.conf has it already.
    """
    config = cli.config()
    found = runtime.this_runtime(cache=SlurmPaths.of_state(config.state_dir).root / "runtime.json")
    if as_json:
        import json

        click.echo(
            json.dumps({"sha256": found.sha256, "feature": found.feature, "files": found.files})
        )
    else:
        click.echo(f"{found.feature} {found.sha256} ({found.files} files)")


def hooks_implemented() -> bool:
    """Whether ``beoctl slurm prolog`` and ``epilog`` exist in this version.

    The virtual cluster's slurm.conf names the hooks only then: a Prolog that
    cannot run would drain every node on the first job.
    """
    return all(stage in slurm.commands for stage in conf.HOOK_STAGES)


def start_virtual(config: Config, spec: vc.ClusterSpec, wait: float) -> str:
    """Start Slurm on the virtual cluster ``spec``; a line saying what runs.

    Raises SlurmError (SlurmDaemonError naming the log of what did not come up).
    """
    settings = config.slurm
    paths = SlurmPaths.of_state(config.state_dir)
    hooks = None
    if hooks_implemented():
        hooks = slurmdaemons.write_hooks(paths.hooks_dir, beoctl_path(), config.path)
    # The virtual nodes run their agents from this very installation: one runtime.
    rt = runtime.this_runtime(cache=paths.root / "runtime.json")
    slurmdaemons.up(
        config.state_dir, spec, settings, hooks=hooks, wait=wait, features=(rt.feature,)
    )
    return (
        f"slurm up: slurmctld port {settings.slurmctld_port}, slurmd port "
        f"{settings.slurmd_port}, {len(spec.nodes)} nodes idle, feature {rt.feature}; "
        f"export SLURM_CONF={paths.conf}"
    )


def stop_virtual(state_dir: Path) -> slurmdaemons.StopReport:
    """Stop the Slurm daemons :func:`start_virtual` started for the virtual cluster of
    ``state_dir`` (those its pid files name and that are still ours; none: nothing to
    do). Raises ClusterProcessError when a daemon survives SIGKILL."""
    return slurmdaemons.down(state_dir)


def daemon_rows(state_dir: Path) -> list[dict[str, Any]]:
    """One row per Slurm daemon of ``state_dir`` (name, pid, alive, log)."""
    return [
        {"daemon": s.name, "pid": s.pid, "alive": s.alive, "log": str(s.log)}
        for s in slurmdaemons.status(state_dir)
    ]
