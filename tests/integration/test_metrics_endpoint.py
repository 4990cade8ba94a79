"""``/metrics`` of a real master with simulated nodes (launcher.cluster.simnodes):
it parses with prometheus_client's parser, and a job moves the job, cache, byte
and fill series by what the job's nodes reported (the database's job_nodes rows)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import JobNode
from tests.integration.masterproc import Master, running_master
from tests.integration.test_simnodes import beosub_true, simulated, wait_up

NODES = 4

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs beosub as nobody")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(m: Master) -> Samples:
    """One GET /metrics on the master's status service, parsed."""
    port = m.config.service("status").port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after[key] - before[key]


@pytest.mark.slow
def test_a_job_moves_the_counters_by_what_its_nodes_reported(top: Path) -> None:
    with running_master() as m, simulated(m, NODES):
        engine = open_engine(m.config.database_url)
        try:
            wait_up(engine, NODES)
            first = scrape(m)
            assert first[("beolaunch_nodes", (("state", "up"),))] == NODES
            assert first[("beolaunch_nodes_connected", ())] == NODES
            assert first[("beolaunch_database_up", ())] == 1

            runs = []
            for _ in range(2):  # a cold fill, then one the caches hold already
                before = scrape(m)
                done = beosub_true(m, top, NODES)
                assert done.returncode == 0, done.stderr + m.new_log()
                runs.append((before, scrape(m)))

            with transaction(engine, readonly=True) as s:
                reported = s.execute(
                    select(
                        JobNode.job_id,
                        func.count(),
                        func.sum(JobNode.objects_hit),
                        func.sum(JobNode.objects_total - JobNode.objects_hit),
                        func.sum(JobNode.bytes_from_master),
                        func.sum(JobNode.bytes_from_peers),
                    )
                    .group_by(JobNode.job_id)
                    .order_by(JobNode.job_id)
                ).all()
        finally:
            engine.dispose()

    assert len(reported) == 2
    for (before, after), (_job, nodes, hits, misses, master, peer) in zip(
        runs, reported, strict=True
    ):
        assert nodes == NODES
        assert moved(before, after, "beolaunch_jobs", state="completed", scheduler="local") == 1
        assert moved(before, after, "beolaunch_fill_seconds_count") == NODES
        assert moved(before, after, "beolaunch_launch_seconds_count") == 1
        assert moved(before, after, "beolaunch_cache_hits_total") == hits
        assert moved(before, after, "beolaunch_cache_misses_total") == misses
        assert moved(before, after, "beolaunch_fill_bytes_total", source="master") == master
        assert moved(before, after, "beolaunch_fill_bytes_total", source="peer") == peer
        assert moved(before, after, "beolaunch_db_query_seconds_count", kind="post") > 0
    (_, _, cold_hits, cold_misses, cold_master, _), (_, _, warm_hits, warm_misses, _, _) = reported
    assert cold_misses > 0 and cold_master > 0  # the first job fetched its closure
    assert warm_misses == 0 and warm_hits == cold_hits + cold_misses  # the second found it all
