"""``beoctl store``: the master's object store."""

from __future__ import annotations

from datetime import timedelta

import click

from cachefs.store import Store
from launcher.cli.context import CliContext, pass_cli
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.queries import objects_in_use


@click.group()
def store() -> None:
    """The master's content-addressed object store."""


@store.command()
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="DAYS",
    help="Keep the objects of manifests made within DAYS.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Also keep objects stored or used within SECONDS (snapshots in progress).",
)
@pass_cli
def gc(cli: CliContext, retention: float, grace: float) -> None:
    """Remove objects no manifest within the retention period needs.

    Objects of unfinished jobs and objects pinned in a node's cache are kept
    whatever their age.
    """
    with transaction(cli.engine(), readonly=True) as session:
        keep = objects_in_use(session, utcnow() - timedelta(days=retention))
    report = Store(cli.config().store_dir).gc(keep, grace_s=grace)
    click.echo(
        f"removed {report.removed} objects and {report.tmp_removed} temporary files "
        f"({report.freed_bytes} bytes); kept {report.kept}"
    )
