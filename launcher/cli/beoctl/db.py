"""``beoctl db``: schema revisions of the state database."""

from __future__ import annotations

from collections.abc import Callable

import click
from sqlalchemy import Engine

from launcher.cli.context import CliContext, pass_cli
from launcher.state import migrate
from launcher.state.db import make_engine


@click.group()
def db() -> None:
    """Show or move the state database's schema revision."""


@db.command()
@pass_cli
def current(cli: CliContext) -> None:
    """Print the database's revision and whether it is this code's head."""
    engine = make_engine(cli.config().database_url)
    try:
        rev = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if rev == head:
        click.echo(f"{rev} (head)")
    else:
        click.echo(f"{rev or '(none)'} (head is {head}: run 'beoctl db upgrade')")


def _move(cli: CliContext, step: Callable[[Engine, str], None], revision: str) -> None:
    engine = make_engine(cli.config().database_url)
    try:
        before = migrate.current_revision(engine)
        step(engine, revision)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"already at {after or '(none)'}")
    else:
        click.echo(f"{before or '(none)'} -> {after or '(none)'}")


@db.command()
@click.argument("revision", default="head")
@pass_cli
def upgrade(cli: CliContext, revision: str) -> None:
    """Upgrade the database to REVISION (default: head)."""
    _move(cli, migrate.upgrade, revision)


@db.command()
@click.argument("revision")
@pass_cli
def downgrade(cli: CliContext, revision: str) -> None:
    """Downgrade the database to REVISION ('-1' for one step, 'base' for empty)."""
    _move(cli, migrate.downgrade, revision)
