"""``beoacct``: accounting on the exact file versions jobs ran.

Root reads the state database (root's only); any other user asks the master,
which shows them their own jobs only (launcher/acct.py).
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from launcher import acct
from launcher.cli.context import CliContext, pass_cli, script_group
from launcher.cli.entry import run
from launcher.cli.output import emit, format_options
from launcher.errors import ReportWriteError
from launcher.master.client import BlockingClient
from launcher.master.paths import socket_path
from launcher.state.db import transaction

cli = script_group("Which jobs ran which file versions, where, and what it cost.")


def _fetch(cli: CliContext, command: str, args: dict[str, Any]) -> acct.Table:
    """``beoacct COMMAND``'s table: from the database as root, else as the master
    lets this user see it."""
    if os.geteuid() == 0:
        with transaction(cli.engine(), readonly=True) as session:
            return acct.table(session, command, args, None)
    doc = BlockingClient(socket_path(cli.config())).acct(command, args)
    return acct.Table(doc["rows"], tuple(doc["columns"]), str(doc.get("empty", "")))


def _show(cli: CliContext, command: str, args: dict[str, Any], fmt: str) -> None:
    """Print ``beoacct COMMAND``'s table (see :func:`_fetch`)."""
    found = _fetch(cli, command, args)
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


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class _Progress:
    """Says each step on stderr once the report has taken over a second: quiet
    when it is quick, not silent when it is not."""

    QUIET_FOR = 1.0  # seconds

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, step: str) -> None:
        if time.monotonic() - self.started > self.QUIET_FOR:
            click.echo(f"beoacct report: {step}", err=True)


@cli.command()
@click.option(
    "--since",
    metavar="DATE|DURATION",
    help="Only jobs submitted since then: 2026-11-01, 2026-11-01T12:00 (UTC), or 7d, 12h, 4w.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, dir_okay=True, writable=True, exists=True, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory to write beolaunch-report-DATE.html into.",
)
@click.option("--path", metavar="PATH", help="Also plot which versions of PATH jobs ran.")
@pass_cli
def report(cli: CliContext, since: str | None, out_dir: Path, path: str | None) -> None:
    """Write an HTML page of plots over time: cache hit rate, bytes by source,
    launch latency, jobs per user (and with --path, that path's versions).

    One self-contained file (images inline, nothing fetched when opened). Root's
    covers every user's jobs; anyone else's, their own.
    """
    # matplotlib takes most of a second to import: only this command pays for it.
    from cachefs.atomicfile import write_atomic
    from launcher.report.build import ReportInput, build
    from launcher.report.since import parse_since

    progress = _Progress()
    now = datetime.now(UTC)
    start = None if since is None else parse_since(since, now)
    args = {"since": None if start is None else start.isoformat()}
    progress("reading jobs")
    timeline = _fetch(cli, "timeline", args).rows
    versions: list[dict[str, Any]] = []
    path_jobs: list[dict[str, Any]] = []
    if path is not None:
        progress(f"reading the versions of {path}")
        versions = _fetch(cli, "versions", {"path": path}).rows
        path_jobs = _fetch(cli, "jobs", {"path": path, "sha256": None, "scheduler": None}).rows
    uid = os.geteuid()
    scope = "Every user's jobs" if uid == 0 else f"{_user_name(uid)}'s jobs"
    inp = ReportInput(timeline, versions, path_jobs, path, start, scope, now)
    page = build(inp, _user_name, progress)
    target = out_dir / f"beolaunch-report-{now:%Y-%m-%d}.html"
    try:
        write_atomic(target, page)
    except OSError as exc:
        raise ReportWriteError(target, exc.strerror or str(exc)) from exc
    click.echo(f"wrote {target}")


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beoacct")
