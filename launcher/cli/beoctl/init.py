"""``beoctl init``."""

from __future__ import annotations

from pathlib import Path

import click

from launcher import config as cfg
from launcher.initialize import initialize


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
def init(state_dir: Path, database_url: str | None) -> None:
    """Create the state dir, config, cluster secret and database (idempotent)."""
    result = initialize(state_dir, database_url)
    path = result.config.path
    if not result.created:
        click.echo(f"{path.parent} is already initialised; nothing changed")
        return
    for thing in result.created:
        click.echo(f"created {thing}")
    if path != cfg.DEFAULT_CONFIG:
        click.echo(f"to use it: export {cfg.CONFIG_ENV}={path}")
