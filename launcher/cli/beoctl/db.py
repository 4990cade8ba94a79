"""``beoctl db``: schema revisions of the state database."""

from __future__ import annotations

import click

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


@db.command()
@click.argument("revision", default="head")
@pass_cli
def upgrade(cli: CliContext, revision: str) -> None:
    """Upgrade the database to REVISION (default: head)."""
    engine = make_engine(cli.config().database_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    click.echo(f"{before or '(none)'} -> {after}" if before != after else f"already at {after}")


@db.command()
@click.argument("revision")
@pass_cli
def downgrade(cli: CliContext, revision: str) -> None:
    """Downgrade the database to REVISION ('-1' for one step, 'base' for empty)."""
    engine = make_engine(cli.config().database_url)
    try:
        before = migrate.current_revision(engine)
        migrate.downgrade(engine, revision)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    click.echo(f"{before or '(none)'} -> {after or '(none)'}")
