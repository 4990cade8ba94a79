"""``beoctl init``."""

from __future__ import annotations

from pathlib import Path

import click

from launcher import config as cfg
from launcher.initialize import initialize
from launcher.isolation import MAX_TAG, init_isolated


@click.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=cfg.DEFAULT_STATE_DIR,
    show_default=True,
    help="Directory for the config, secret, database and store.",
)
@click.option(
    "--db",
    "database_url",
    metavar="URL",
    help="SQLAlchemy database URL (default: SQLite in the state dir).",
)
@click.option(
    "--isolated",
    is_flag=True,
    help="Own free ports, cluster names and subnet, so its cluster runs beside others.",
)
@click.option(
    "--tag",
    metavar="TAG",
    help=f"With --isolated: names beo-TAG... (1-{MAX_TAG} of a-z0-9; default random).",
)
@click.option(
    "--no-slurm",
    is_flag=True,
    help="With --isolated: no [slurm] table (with one, the master uses this machine's "
    "Slurm when it has /etc/slurm/slurm.conf and the cluster was not brought up --slurm).",
)
def init(
    state_dir: Path, database_url: str | None, isolated: bool, tag: str | None, no_slurm: bool
) -> None:
    """Create the state dir, config, cluster secret and database (idempotent)."""
    if (tag is not None or no_slurm) and not isolated:
        raise click.UsageError("--tag and --no-slurm need --isolated")
    if isolated:
        iso = init_isolated(state_dir, tag, database_url=database_url, slurm=not no_slurm)
        path, created = iso.config, iso.created
        ports = ", ".join(f"{name} {port}" for name, port in iso.services.items())
        names = (
            f"isolated as {iso.tag!r}: bridge {iso.bridge}, namespaces {iso.netns_prefix}N, "
            f"subnet {iso.subnet}; ports {ports}, peers {iso.peer_port}"
        )
        if iso.slurm is not None:
            names += f", slurmctld {iso.slurm.slurmctld_port}, slurmd {iso.slurm.slurmd_port}"
    else:
        result = initialize(state_dir, database_url)
        path, created, names = result.config.path, result.created, ""
    if not created:
        click.echo(f"{path.parent} is already initialised; nothing changed")
        return
    for thing in created:
        click.echo(f"created {thing}")
    if names:
        click.echo(names)
    if path != cfg.DEFAULT_CONFIG:
        click.echo(f"to use it: export {cfg.CONFIG_ENV}={path}")
