"""``beostat``: the state of nodes and jobs."""

from __future__ import annotations

from collections.abc import Sequence

import click
from sqlalchemy import select

from launcher.cli.beoctl.node import NODE_COLUMNS, node_row
from launcher.cli.context import CliContext, pass_cli, script_group
from launcher.cli.entry import run
from launcher.cli.output import emit, format_options
from launcher.state.db import transaction
from launcher.state.models import Job
from launcher.state.nodes import list_nodes

cli = script_group("Show nodes and jobs.")


@cli.command()
@format_options
@pass_cli
def nodes(cli: CliContext, fmt: str) -> None:
    """Every node with its state and when it was last seen."""
    with transaction(cli.engine(), readonly=True) as session:
        rows = [node_row(n) for n in list_nodes(session)]
    emit(rows, NODE_COLUMNS, fmt, empty="no nodes")


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs.")
@format_options
@pass_cli
def jobs(cli: CliContext, show_all: bool, fmt: str) -> None:
    """Jobs (unfinished ones unless --all), oldest first."""
    stmt = select(Job).order_by(Job.id)
    if not show_all:
        stmt = stmt.where(Job.state.in_(("pending", "preparing", "running")))
    with transaction(cli.engine(), readonly=True) as session:
        rows = [
            {
                "job": j.id,
                "scheduler": j.scheduler,
                "scheduler_id": j.scheduler_job_id,
                "name": j.name,
                "uid": j.uid,
                "state": j.state,
                "nodes": len(j.nodes),
                "manifest": j.manifest_id[:12],
                "submitted": j.submitted_at,
                "exit": j.exit_status,
            }
            for j in session.scalars(stmt)
        ]
    cols = (
        "job",
        "scheduler",
        "scheduler_id",
        "name",
        "uid",
        "state",
        "nodes",
        "manifest",
        "submitted",
        "exit",
    )
    emit(rows, cols, fmt, empty="no jobs")


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beostat")
