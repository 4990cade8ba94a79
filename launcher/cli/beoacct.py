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


def _ref(scheduler: str, scheduler_job_id: str | None) -> str | None:
    """``slurm:1234``: how a job is named to Slurm users (and accepted back as JOB)."""
    return None if scheduler_job_id is None else f"{scheduler}:{scheduler_job_id}"


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
    with transaction(cli.engine(), readonly=True) as session:
        if sha256 is not None:
            rows = queries.jobs_with_object(session, check_sha256(sha256))
        else:
            assert path is not None
            rows = queries.jobs_with_path(session, path)
    if scheduler is not None:
        rows = [r for r in rows if r.scheduler == scheduler]
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
@click.argument("job")
@click.option("--path", metavar="PATH", help="Only this path (a symlink is followed).")
@format_options
@pass_cli
def files(cli: CliContext, job: str, path: str | None, fmt: str) -> None:
    """Which version of each file (or of --path) JOB used, on each of its nodes.

    JOB is its Beolaunch id (42) or SCHEDULER:ID (slurm:1234).
    """
    with transaction(cli.engine(), readonly=True) as session:
        rows = queries.job_versions(session, job, path)
    out = [
        {**dataclasses.asdict(r), "scheduler_job": _ref(r.scheduler, r.scheduler_job_id)}
        for r in rows
    ]
    cols = ("job_id", "scheduler_job", "node", "path", "sha256", "accepted_at")
    emit(out, cols, fmt, empty=f"job {job} has no such file on an accepting node")


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
    if job_refs:
        by = "job"
    with transaction(cli.engine(), readonly=True) as session:
        refs: dict[int, str | None] = {}
        if by == "job":
            ids = [queries.find_job(session, ref).id for ref in job_refs] or None
            rows = queries.usage_by_job(session, ids)
            refs = queries.scheduler_refs(session, [int(r.key) for r in rows])
        else:
            rows = queries.usage_by_node(session)
    cols: tuple[str, ...] = (by, "scheduler_job") if by == "job" else (by,)
    cols += (
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
    if by == "job":
        for row in out:
            row["scheduler_job"] = refs.get(row["job"])
    emit(out, cols, fmt, empty="no job has been accepted yet")


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beoacct")
