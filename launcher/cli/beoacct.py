"""``beoacct``: accounting on the exact file versions jobs ran."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import click

from launcher.cli.context import CliContext, pass_cli, script_group
from launcher.cli.entry import run
from launcher.cli.output import emit, format_options
from launcher.state import queries
from launcher.state.db import transaction
from launcher.state.record import check_sha256

cli = script_group("Which jobs ran which file versions, where, and what it cost.")


@cli.command()
@click.option("--sha256", "sha256", metavar="SHA256", help="Jobs that ran this object.")
@click.option("--path", metavar="PATH", help="Jobs that ran this path, with their version.")
@format_options
@pass_cli
def jobs(cli: CliContext, sha256: str | None, path: str | None, fmt: str) -> None:
    """Jobs that ran a file version (--sha256) or a path (--path), per node."""
    if (sha256 is None) == (path is None):
        raise click.UsageError("give exactly one of --sha256 or --path")
    with transaction(cli.engine(), readonly=True) as session:
        if sha256 is not None:
            rows = queries.jobs_with_object(session, check_sha256(sha256))
        else:
            assert path is not None
            rows = queries.jobs_with_path(session, path)
    cols = (
        "job_id",
        "scheduler",
        "scheduler_job_id",
        "uid",
        "node",
        "path",
        "sha256",
        "started_at",
    )
    emit([dataclasses.asdict(r) for r in rows], cols, fmt, empty="no job ran it")


@cli.command()
@click.argument("sha256")
@format_options
@pass_cli
def holders(cli: CliContext, sha256: str, fmt: str) -> None:
    """Nodes whose caches hold object SHA256 now, and the jobs pinning it."""
    with transaction(cli.engine(), readonly=True) as session:
        rows = queries.nodes_holding(session, check_sha256(sha256))
    cols = ("node", "sha256", "cached_at", "last_used", "pinned_by")
    emit([dataclasses.asdict(r) for r in rows], cols, fmt, empty="no node holds it")


@cli.command()
@click.argument("path")
@format_options
@pass_cli
def versions(cli: CliContext, path: str, fmt: str) -> None:
    """Every version of PATH seen in a manifest, oldest first."""
    with transaction(cli.engine(), readonly=True) as session:
        rows = queries.path_versions(session, path)
    cols = ("path", "sha256", "size", "first_seen", "last_seen", "manifests", "jobs")
    emit([dataclasses.asdict(r) for r in rows], cols, fmt, empty=f"no manifest has {path}")


@cli.command()
@click.argument("job_a")
@click.argument("job_b")
@format_options
@pass_cli
def diff(cli: CliContext, job_a: str, job_b: str, fmt: str) -> None:
    """Paths whose version differs between the manifests of JOB_A and JOB_B.

    A job is its Beolaunch id (42) or SCHEDULER:ID (slurm:1234).
    """
    with transaction(cli.engine(), readonly=True) as session:
        rows = queries.manifest_diff(session, job_a, job_b)
    emit(
        [dataclasses.asdict(r) for r in rows],
        ("path", "old", "new"),
        fmt,
        empty="the two jobs ran the same files",
    )


@cli.command()
@click.option("--by", type=click.Choice(["job", "node"]), default="job", show_default=True)
@format_options
@pass_cli
def usage(cli: CliContext, by: str, fmt: str) -> None:
    """Bytes fetched (from master and from peers) and cache hit rate."""
    with transaction(cli.engine(), readonly=True) as session:
        rows = queries.usage_by_job(session) if by == "job" else queries.usage_by_node(session)
    cols = (
        by,
        "jobs",
        "nodes",
        "objects_total",
        "objects_hit",
        "hit_rate",
        "bytes_total",
        "bytes_fetched",
        "bytes_from_master",
        "bytes_from_peers",
        "fill_seconds",
    )
    # A job is its numeric id everywhere else (beostat jobs --json): keep it so here.
    out = [
        {**dataclasses.asdict(r), by: int(r.key) if by == "job" else r.key, "hit_rate": r.hit_rate}
        for r in rows
    ]
    emit(out, cols, fmt, empty="no job has been accepted yet")


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beoacct")
