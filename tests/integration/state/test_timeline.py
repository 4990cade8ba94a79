"""``beoacct report``'s rows: each job's times and fill, as each viewer may see them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from launcher import acct
from launcher.errors import AcctRequestError
from launcher.state.db import transaction
from launcher.state.timeline import job_timeline
from tests.integration.state.populate import (
    DATA,
    FOO_V2,
    LIBC,
    PROG_V2,
    SIZES,
    T0,
    Populated,
)


def test_each_job_with_its_fill_summed_over_accepting_nodes(
    engine: Engine, cluster: Populated
) -> None:
    with transaction(engine, readonly=True) as s:
        rows = job_timeline(s)
    assert [(r.job, r.uid, r.scheduler, r.nodes) for r in rows] == [
        (cluster.job1, 1000, "local", 2),
        (cluster.job2, 1000, "slurm", 2),
        (cluster.job3, 1001, "local", 1),
    ]
    one, two, three = rows
    assert (one.objects_total, one.objects_hit) == (6, 0)
    assert (two.objects_total, two.objects_hit) == (8, 1)
    new_in_m2 = SIZES[PROG_V2] + SIZES[FOO_V2] + SIZES[DATA]
    m2_bytes = new_in_m2 + SIZES[LIBC]
    assert (two.bytes_from_master, two.bytes_from_peers) == (new_in_m2, m2_bytes)
    assert one.submitted_at == T0 and one.started_at == T0 + timedelta(minutes=1)
    assert three.started_at is None


def test_a_user_sees_only_their_jobs_and_since_filters(engine: Engine, cluster: Populated) -> None:
    with transaction(engine, readonly=True) as s:
        theirs = acct.table(s, "timeline", {}, 1001).rows
        assert [r["job"] for r in theirs] == [cluster.job3]
        assert {r["uid"] for r in acct.table(s, "timeline", {}, 1000).rows} == {1000}
        assert acct.table(s, "timeline", {}, 4242).rows == []
        every = acct.table(s, "timeline", {}, 0).rows
        assert [r["job"] for r in every] == [cluster.job1, cluster.job2, cluster.job3]
        since = (T0 + timedelta(hours=1)).isoformat()
        later = acct.table(s, "timeline", {"since": since}, None).rows
        assert [r["job"] for r in later] == [cluster.job2, cluster.job3]


@pytest.mark.parametrize(("since", "problem"), [("soon", "ISO 8601"), ("2026-11-01", "offset")])
def test_a_bad_since_is_named(engine: Engine, since: str, problem: str) -> None:
    with transaction(engine, readonly=True) as s, pytest.raises(AcctRequestError, match=problem):
        acct.table(s, "timeline", {"since": since}, None)
