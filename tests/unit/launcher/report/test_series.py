"""Jobs into periods: widths, boundaries and each series' sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from launcher.report import series
from launcher.report.series import DAY, HOUR, JobPoint

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday


def _row(job: int, uid: int, at: datetime, **fill: object) -> dict[str, object]:
    row: dict[str, object] = {
        "job": job,
        "uid": uid,
        "submitted_at": at.isoformat(),  # as the master's JSON carries it
        "started_at": (at + timedelta(seconds=10 * job)).isoformat(),
        "objects_total": 10,
        "objects_hit": 5,
        "bytes_from_master": 100,
        "bytes_from_peers": 300,
    }
    row.update(fill)
    return row


def _points() -> list[JobPoint]:
    return series.job_points(
        [
            _row(3, 1001, T0 + timedelta(days=1, hours=2), started_at=None),
            _row(1, 1000, T0 + timedelta(hours=1)),
            _row(2, 1000, T0 + timedelta(hours=5), objects_total=0, objects_hit=0),
        ]
    )


def test_points_are_in_submission_order_and_aware() -> None:
    points = _points()
    assert [p.job for p in points] == [1, 2, 3]
    assert all(p.submitted.tzinfo is not None for p in points)
    assert [p.latency for p in points] == [10.0, 20.0, None]


def test_width_is_the_shortest_that_fits() -> None:
    assert series.width_for([T0, T0 + timedelta(hours=5)], 12) == HOUR
    assert series.width_for([T0, T0 + timedelta(days=2)], 12) == 6 * HOUR
    assert series.width_for([T0, T0 + timedelta(days=90)], 120) == DAY
    assert series.width_for([T0, T0 + timedelta(days=90)], 12) == 30 * DAY
    assert series.width_for([], 12) == HOUR


def test_periods_start_on_their_boundary() -> None:
    assert series.period_of(T0 + timedelta(hours=5, minutes=59), HOUR) == T0 + timedelta(hours=5)
    assert series.period_of(T0 + timedelta(hours=23), DAY) == T0
    # weeks start on Mondays: Sunday the 8th is in the week of Monday the 2nd
    assert series.period_of(T0 + timedelta(days=6, hours=23), 7 * DAY) == T0
    assert series.period_of(T0 + timedelta(days=7), 7 * DAY) == T0 + timedelta(days=7)


def test_series_sum_per_period() -> None:
    points = _points()
    rates = series.hit_rate(points, DAY)
    assert [(r.start, r.hit, r.total, r.rate) for r in rates] == [
        (T0, 5, 10, 0.5),  # job 2 needed nothing: it adds nothing
        (T0 + timedelta(days=1), 5, 10, 0.5),
    ]
    assert series.hit_rate(points[1:2], DAY)[0].rate is None
    assert [(b.master, b.peers) for b in series.bytes_by_source(points, DAY)] == [
        (200, 600),
        (100, 300),
    ]
    # job 3 did not start: no latency, and no period of latencies
    latency = series.launch_latency(points, DAY)
    assert [(r.start, r.jobs, r.median, r.worst) for r in latency] == [(T0, 2, 15.0, 20.0)]
    users, periods = series.jobs_per_user(points, DAY)
    assert users == [1000, 1001]
    assert [p.counts for p in periods] == [{1000: 2}, {1001: 1}]


def test_path_runs_are_one_per_job_since() -> None:
    rows = [
        {"job_id": 1, "node": "n1", "sha256": "a" * 64, "started_at": T0},
        {"job_id": 1, "node": "n2", "sha256": "a" * 64, "started_at": T0},
        {"job_id": 2, "node": "n1", "sha256": "b" * 64, "started_at": T0 + timedelta(days=1)},
    ]
    assert [r.job for r in series.path_runs(rows, None)] == [1, 2]
    assert [r.job for r in series.path_runs(rows, T0 + timedelta(hours=1))] == [2]


def test_labels_say_the_period() -> None:
    assert series.period_label(T0, HOUR) == "2026-11-02 00:00"
    assert series.period_label(T0, DAY) == "2026-11-02"
    assert series.period_label(T0, 7 * DAY) == "week of 2026-11-02"
    assert series.width_name(30 * DAY) == "30 days"
