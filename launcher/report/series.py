"""Accounting rows as time series: jobs grouped into periods, no plotting.

Every series is keyed by when a job was *submitted* (the --since filter's
time too), so one job falls in the same period on every plot. A period is a
fixed width from a ladder (an hour up to a year), chosen so a span of jobs
makes at most a given number of periods: about a hundred bars on a plot, a
dozen rows in the table under it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

HOUR = 3600
DAY = 24 * HOUR
#: period widths in seconds, shortest first
WIDTHS = (HOUR, 6 * HOUR, DAY, 7 * DAY, 30 * DAY, 365 * DAY)
#: 1970-01-01 was a Thursday: weeks start on the Monday after it, minus a week
_MONDAY = 4 * DAY


@dataclass(frozen=True)
class JobPoint:
    """One job as the report reads it."""

    job: int
    uid: int
    submitted: datetime
    started: datetime | None
    objects_total: int
    objects_hit: int
    bytes_from_master: int
    bytes_from_peers: int

    @property
    def latency(self) -> float | None:
        """Seconds from submission to start; None for a job that did not start."""
        if self.started is None:
            return None
        return (self.started - self.submitted).total_seconds()


@dataclass(frozen=True)
class Run:
    """A job that ran a version of the report's path."""

    job: int
    started: datetime
    sha256: str


def when(value: Any) -> datetime:
    """An aware UTC time from a database value or its ISO text (the master's JSON)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a time, got {value!r}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def job_points(rows: Iterable[Mapping[str, Any]]) -> list[JobPoint]:
    """``beoacct``'s timeline rows (launcher/acct.py) as points, oldest first."""
    points = [
        JobPoint(
            int(r["job"]),
            int(r["uid"]),
            when(r["submitted_at"]),
            None if r["started_at"] is None else when(r["started_at"]),
            int(r["objects_total"]),
            int(r["objects_hit"]),
            int(r["bytes_from_master"]),
            int(r["bytes_from_peers"]),
        )
        for r in rows
    ]
    return sorted(points, key=lambda p: (p.submitted, p.job))


def path_runs(rows: Iterable[Mapping[str, Any]], since: datetime | None) -> list[Run]:
    """``beoacct jobs --path`` rows (one per job and node) as one run per job,
    started at or after ``since``, oldest first."""
    runs: dict[int, Run] = {}
    for r in rows:
        started = when(r["started_at"])
        if since is None or started >= since:
            runs.setdefault(int(r["job_id"]), Run(int(r["job_id"]), started, str(r["sha256"])))
    return sorted(runs.values(), key=lambda r: (r.started, r.job))


def width_for(times: Sequence[datetime], most: int) -> int:
    """The shortest period width (seconds) that splits the span of ``times``
    into at most ``most`` periods (the longest width when none does)."""
    if not times:
        return WIDTHS[0]
    span = (max(times) - min(times)).total_seconds()
    return next((w for w in WIDTHS if span // w + 1 <= most), WIDTHS[-1])


def period_of(moment: datetime, width: int) -> datetime:
    """The start of the period of ``width`` seconds that holds ``moment`` (weeks
    start on Mondays, 00:00 UTC)."""
    offset = _MONDAY if width == 7 * DAY else 0
    seconds = int(moment.timestamp()) - offset
    return datetime.fromtimestamp(seconds - seconds % width + offset, UTC)


def by_period(points: Iterable[JobPoint], width: int) -> dict[datetime, list[JobPoint]]:
    """Points grouped by the period they were submitted in, in time order."""
    groups: dict[datetime, list[JobPoint]] = {}
    for p in points:
        groups.setdefault(period_of(p.submitted, width), []).append(p)
    return dict(sorted(groups.items()))


@dataclass(frozen=True)
class HitRate:
    start: datetime
    hit: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.hit / self.total if self.total else None


def hit_rate(points: Iterable[JobPoint], width: int) -> list[HitRate]:
    """Objects found in node caches over objects needed, per period."""
    return [
        HitRate(start, sum(p.objects_hit for p in group), sum(p.objects_total for p in group))
        for start, group in by_period(points, width).items()
    ]


@dataclass(frozen=True)
class Bytes:
    start: datetime
    master: int
    peers: int


def bytes_by_source(points: Iterable[JobPoint], width: int) -> list[Bytes]:
    """Bytes nodes fetched from the master and from peers, per period."""
    return [
        Bytes(
            start,
            sum(p.bytes_from_master for p in group),
            sum(p.bytes_from_peers for p in group),
        )
        for start, group in by_period(points, width).items()
    ]


@dataclass(frozen=True)
class Latency:
    start: datetime
    jobs: int
    median: float
    p95: float
    worst: float


def launch_latency(points: Iterable[JobPoint], width: int) -> list[Latency]:
    """Seconds from submission to start of the jobs that started, per period."""
    out = []
    for start, group in by_period(points, width).items():
        seconds = sorted(p.latency for p in group if p.latency is not None)
        if seconds:
            p95 = seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))]
            out.append(Latency(start, len(seconds), statistics.median(seconds), p95, seconds[-1]))
    return out


@dataclass(frozen=True)
class UserJobs:
    start: datetime
    counts: dict[int, int]  # uid -> jobs submitted in the period


def jobs_per_user(points: Sequence[JobPoint], width: int) -> tuple[list[int], list[UserJobs]]:
    """The users, most jobs first, and each period's job count per user."""
    totals: dict[int, int] = {}
    for p in points:
        totals[p.uid] = totals.get(p.uid, 0) + 1
    users = sorted(totals, key=lambda u: (-totals[u], u))
    periods = []
    for start, group in by_period(points, width).items():
        counts: dict[int, int] = {}
        for p in group:
            counts[p.uid] = counts.get(p.uid, 0) + 1
        periods.append(UserJobs(start, counts))
    return users, periods


def period_label(start: datetime, width: int) -> str:
    """How a period is named in a table: its start, as precise as its width needs."""
    if width < DAY:
        return start.strftime("%Y-%m-%d %H:%M")
    if width >= 30 * DAY:  # epoch-aligned, not calendar months: say both ends
        end = start + timedelta(seconds=width - 1)
        return f"{start:%Y-%m-%d} to {end:%Y-%m-%d}"
    if width == 7 * DAY:
        return f"week of {start:%Y-%m-%d}"
    return start.strftime("%Y-%m-%d")


def width_name(width: int) -> str:
    """``day``, ``6 hours``...: a period's width in words."""
    names = {HOUR: "hour", 6 * HOUR: "6 hours", DAY: "day", 7 * DAY: "week"}
    return names.get(width, f"{width // DAY} days")
