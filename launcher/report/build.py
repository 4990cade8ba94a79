"""The report page from the rows ``beoacct`` fetched (as root from the database,
as a user from the master: the same rows, the user's own jobs only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from launcher.report import plots, series
from launcher.report.page import Section, render
from launcher.report.series import JobPoint, Run, period_label

#: periods on a plot, and rows in the table under it (at most)
PLOT_PERIODS, TABLE_PERIODS = 120, 12
#: users listed under "jobs per user"
TABLE_USERS = 12

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ReportInput:
    """What the report is made of: ``beoacct``'s timeline rows, and for ``path``
    its ``versions`` and ``jobs --path`` rows (empty without a path)."""

    timeline: Sequence[Mapping[str, Any]]
    versions: Sequence[Mapping[str, Any]]
    path_jobs: Sequence[Mapping[str, Any]]
    path: str | None
    since: datetime | None
    #: whose jobs: "every user's jobs", "alice's jobs"
    scope: str
    now: datetime


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def _hit_rate(points: Sequence[JobPoint], plot_w: int, table_w: int) -> Section:
    rows = series.hit_rate(points, table_w)
    return Section(
        "Cache hit rate",
        "Objects the accepting nodes already held, over the objects the jobs needed"
        " (summed over each job's nodes), by when the jobs were submitted.",
        plots.hit_rate(series.hit_rate(points, plot_w), plot_w),
        ("period", "objects needed", "already cached", "hit rate"),
        [(period_label(r.start, table_w), r.total, r.hit, _pct(r.hit, r.total)) for r in rows],
    )


def _bytes(points: Sequence[JobPoint], plot_w: int, table_w: int) -> Section:
    rows = series.bytes_by_source(points, table_w)
    return Section(
        "Bytes fetched, by source",
        "What nodes fetched to fill their caches: from the master's object service,"
        " and from peer nodes (the master's egress is the first).",
        plots.bytes_by_source(series.bytes_by_source(points, plot_w), plot_w),
        ("period", "from the master (MiB)", "from peers (MiB)", "peers' share"),
        [
            (
                period_label(r.start, table_w),
                _mib(r.master),
                _mib(r.peers),
                _pct(r.peers, r.master + r.peers),
            )
            for r in rows
        ],
    )


def _latency(points: Sequence[JobPoint], plot_w: int, table_w: int) -> Section:
    rows = series.launch_latency(points, table_w)
    return Section(
        "Launch latency",
        "Seconds from submission to start (queueing, cache fill and acceptance), of"
        " the jobs that started."
        if rows
        else "No job in this report has started yet.",
        plots.launch_latency(series.launch_latency(points, plot_w), plot_w) if rows else None,
        ("period", "jobs started", "median (s)", "95th percentile (s)", "longest (s)"),
        [
            (
                period_label(r.start, table_w),
                r.jobs,
                f"{r.median:.1f}",
                f"{r.p95:.1f}",
                f"{r.worst:.1f}",
            )
            for r in rows
        ],
    )


def _users(points: Sequence[JobPoint], plot_w: int, names: Callable[[int], str]) -> Section:
    users, periods = series.jobs_per_user(points, plot_w)
    shown = {u: names(u) for u in users}
    mine: dict[int, list[JobPoint]] = {}
    for p in points:
        mine.setdefault(p.uid, []).append(p)
    table = [
        (
            shown[u],
            len(mine[u]),
            _pct(len(mine[u]), len(points)),
            f"{mine[u][0].submitted:%Y-%m-%d %H:%M}",
            f"{mine[u][-1].submitted:%Y-%m-%d %H:%M}",
        )
        for u in users[:TABLE_USERS]
    ]
    if len(users) > TABLE_USERS:
        rest = sum(len(mine[u]) for u in users[TABLE_USERS:])
        table.append((f"{len(users) - TABLE_USERS} others", rest, _pct(rest, len(points)), "", ""))
    return Section(
        "Jobs per user",
        f"Jobs submitted per {series.width_name(plot_w)}, by user"
        f" (the {plots.TOP_USERS} with most jobs apart).",
        plots.jobs_per_user(users, shown, periods, plot_w),
        ("user", "jobs", "share", "first submitted", "last submitted"),
        table,
    )


def _versions(inp: ReportInput, runs: Sequence[Run]) -> Section:
    path = inp.path or ""
    ran: dict[str, int] = {}
    for r in runs:
        ran[r.sha256] = ran.get(r.sha256, 0) + 1
    versions = [
        v
        for v in inp.versions
        if v["sha256"] in ran or inp.since is None or series.when(v["last_seen"]) >= inp.since
    ]
    order = [str(v["sha256"]) for v in versions]
    order += sorted({r.sha256 for r in runs} - set(order))
    table = [
        (
            str(v["sha256"])[:12],
            int(v["size"]),
            f"{series.when(v['first_seen']):%Y-%m-%d %H:%M}",
            f"{series.when(v['last_seen']):%Y-%m-%d %H:%M}",
            ran.get(str(v["sha256"]), 0),
            int(v["jobs"]),
        )
        for v in versions
    ]
    note = (
        f"Each dot a job that ran {path}, at its start, on the row of the version it"
        " had (a symlink followed within the job's manifest)."
    )
    if not runs:
        note = f"No job in this report ran {path}."
    return Section(
        f"Versions of {path}",
        note,
        plots.path_versions(runs, order) if runs else None,
        (
            "version (sha256)",
            "bytes",
            "first in a manifest",
            "last in a manifest",
            "jobs here",
            "jobs in all",
        ),
        table,
    )


def build(inp: ReportInput, names: Callable[[int], str], progress: Progress) -> str:
    """The report's HTML. ``names`` gives a uid's user name; ``progress`` is told
    each step before it starts (drawing takes most of the time)."""
    points = series.job_points(inp.timeline)
    runs = series.path_runs(inp.path_jobs, inp.since)
    times = [p.submitted for p in points] + [r.started for r in runs]
    plot_w = series.width_for(times, PLOT_PERIODS)
    table_w = max(plot_w, series.width_for(times, TABLE_PERIODS))
    since = f"since {inp.since:%Y-%m-%d %H:%M} UTC" if inp.since else "all time"
    meta = [f"{inp.scope}, {since}; made {inp.now:%Y-%m-%d %H:%M} UTC by beoacct report."]
    if points:
        meta.append(
            f"{len(points):,} jobs submitted from {points[0].submitted:%Y-%m-%d %H:%M} to"
            f" {points[-1].submitted:%Y-%m-%d %H:%M}; plots one bar or point per"
            f" {series.width_name(plot_w)}, tables one row per {series.width_name(table_w)}."
        )
    steps: list[tuple[str, Callable[[], Section]]] = []
    if points:
        steps += [
            ("cache hit rate", lambda: _hit_rate(points, plot_w, table_w)),
            ("bytes by source", lambda: _bytes(points, plot_w, table_w)),
            ("launch latency", lambda: _latency(points, plot_w, table_w)),
            ("jobs per user", lambda: _users(points, plot_w, names)),
        ]
    if inp.path is not None and (points or runs or inp.versions):
        steps.append((f"versions of {inp.path}", lambda: _versions(inp, runs)))
    sections = []
    for i, (name, make) in enumerate(steps, start=1):
        progress(f"drawing {name} ({i}/{len(steps)})")
        sections.append(make())
    empty = f"Nothing yet: no job has been submitted ({inp.scope}, {since})."
    return render("Beolaunch report", meta, sections, empty)
