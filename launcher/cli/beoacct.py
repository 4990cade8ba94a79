"""``beoacct``: accounting on the exact file versions jobs ran.

Root reads the state database (root's only); any other user asks the master,
which shows them their own jobs only (launcher/acct.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import click

from launcher import acct
from launcher.cli.context import CliContext, pass_cli, script_group
from launcher.cli.entry import run
from launcher.cli.output import emit, format_options
from launcher.master.client import BlockingClient
from launcher.master.paths import socket_path
from launcher.state.db import transaction

cli = script_group("Which jobs ran which file versions, where, and what it cost.")


def _show(cli: CliContext, command: str, args: dict[str, Any], fmt: str) -> None:
    """Print ``beoacct COMMAND``'s table: from the database as root, else as the
    master lets this user see it."""
    if os.geteuid() == 0:
        with transaction(cli.engine(), readonly=True) as session:
            found = acct.table(session, command, args, None)
    else:
        doc = BlockingClient(socket_path(cli.config())).acct(command, args)
        found = acct.Table(doc["rows"], tuple(doc["columns"]), str(doc.get("empty", "")))
    emit(found.rows, found.columns, fmt, empty=found.empty)


@cli.command()
@click.option("--sha256", "sha256", metavar="SHA256", help="Jobs that ran this object.")
@click.option("--path", metavar="PATH", help="Jobs that ran this path, with their version.")
@click.option(
    "--scheduler",
    type=click.Choice(["local", "slurm"]),
    default=None,
    help="Only jobs this scheduler ran (slurm: their Slurm job ids).",
)
@format_options
@pass_cli
def jobs(
    cli: CliContext, sha256: str | None, path: str | None, scheduler: str | None, fmt: str
) -> None:
    """Jobs that ran a file version (--sha256) or a path (--path), per node."""
    if (sha256 is None) == (path is None):
        raise click.UsageError("give exactly one of --sha256 or --path")
    _show(cli, "jobs", {"sha256": sha256, "path": path, "scheduler": scheduler}, fmt)


@cli.command()
@click.argument("job")
@click.option("--path", metavar="PATH", help="Only this path (a symlink is followed).")
@format_options
@pass_cli
def files(cli: CliContext, job: str, path: str | None, fmt: str) -> None:
    """Which version of each file (or of --path) JOB used, on each of its nodes.

    JOB is its Beolaunch id (42) or SCHEDULER:ID (slurm:1234).
    """
    _show(cli, "files", {"job": job, "path": path}, fmt)


@cli.command()
@click.argument("sha256")
@format_options
@pass_cli
def holders(cli: CliContext, sha256: str, fmt: str) -> None:
    """Nodes whose caches hold object SHA256 now, and the jobs pinning it."""
    _show(cli, "holders", {"sha256": sha256}, fmt)


@cli.command()
@click.argument("path")
@format_options
@pass_cli
def versions(cli: CliContext, path: str, fmt: str) -> None:
    """Every version of PATH seen in a manifest, oldest first."""
    _show(cli, "versions", {"path": path}, fmt)


@cli.command()
@click.argument("job_a")
@click.argument("job_b")
@format_options
@pass_cli
def diff(cli: CliContext, job_a: str, job_b: str, fmt: str) -> None:
    """Paths whose version differs between the manifests of JOB_A and JOB_B.

    A job is its Beolaunch id (42) or SCHEDULER:ID (slurm:1234).
    """
    _show(cli, "diff", {"job_a": job_a, "job_b": job_b}, fmt)


@cli.command()
@click.option("--by", type=click.Choice(["job", "node"]), default="job", show_default=True)
@click.option(
    "--job",
    "job_refs",
    multiple=True,
    metavar="JOB",
    help="Only this job: 42 or SCHEDULER:ID (slurm:1234); repeatable. Implies --by job.",
)
@format_options
@pass_cli
def usage(cli: CliContext, by: str, job_refs: tuple[str, ...], fmt: str) -> None:
    """Bytes fetched (from master and from peers) and cache hit rate."""
    _show(cli, "usage", {"by": by, "jobs": list(job_refs)}, fmt)


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beoacct")
