"""The master's metrics: what each event adds, the states read at scrape time,
the /metrics endpoint, and the Grafana dashboard naming only series it exposes."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from cachefs.manifest import Entry, build
from launcher.errors import DatabaseUnavailable
from launcher.master.dbwork import DbWork
from launcher.master.metrics import (
    BOOT_FORGET_S,
    Metrics,
    Scrapes,
    StateCounts,
    metrics_routes,
    state_counts,
)
from launcher.master.statusweb import status_app
from launcher.state.db import transaction
from launcher.state.nodes import add_node
from launcher.state.record import record_job, record_submitted_manifest
from launcher.wire import FillReport

ROOT = Path(__file__).resolve().parents[4]
DASHBOARD = ROOT / "docs" / "grafana-beolaunch.json"


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition as parsed by prometheus_client's own parser:
    (name, sorted labels) -> value."""
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fill_report_adds_hits_misses_bytes_by_source_and_its_time() -> None:
    m = Metrics()
    m.filled(FillReport(objects_total=10, objects_hit=3, bytes_total=900,
                        bytes_from_master=500, bytes_from_peers=300, fill_seconds=2.0))  # fmt: skip
    m.filled(FillReport(objects_total=4, objects_hit=4, fill_seconds=0.0))
    assert value(m, "beolaunch_cache_hits_total") == 7
    assert value(m, "beolaunch_cache_misses_total") == 7
    assert value(m, "beolaunch_fill_bytes_total", source="master") == 500
    assert value(m, "beolaunch_fill_bytes_total", source="peer") == 300
    assert value(m, "beolaunch_fill_seconds_count") == 2
    assert value(m, "beolaunch_fill_seconds_sum") == 2.0
    assert value(m, "beolaunch_fill_seconds_bucket", le="1.0") == 1


def test_a_boot_is_timed_from_its_ticket_to_its_agent_registering() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    m.boot_started("n1")
    clock.now += 5
    m.boot_started("n1")  # a new ticket (a second try) starts the boot again
    clock.now += 12
    m.node_up("n1")
    m.node_up("n1")  # a reconnect without a boot: nothing
    m.node_up("n2")  # never booted here
    assert value(m, "beolaunch_boot_seconds_count") == 1
    assert value(m, "beolaunch_boot_seconds_sum") == 12


def test_a_boot_that_never_ended_is_forgotten() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    m.boot_started("n1")
    clock.now += BOOT_FORGET_S + 1
    m.boot_started("n2")  # drops n1's start
    m.node_up("n1")
    assert value(m, "beolaunch_boot_seconds_count") == 0


def test_launches_and_database_calls_go_to_their_histograms() -> None:
    m = Metrics()
    m.launched(1.5)
    m.db_timed("read", 0.002)
    m.db_timed("post", 0.5)
    assert value(m, "beolaunch_launch_seconds_count") == 1
    assert value(m, "beolaunch_db_query_seconds_count", kind="read") == 1
    assert value(m, "beolaunch_db_query_seconds_count", kind="post") == 1
    assert value(m, "beolaunch_db_query_seconds_count", kind="write") == 0


def test_states_absent_from_a_reading_are_zero() -> None:
    m = Metrics()
    m.set_states(StateCounts({"up": 3, "busy": 1}, {("running", "slurm"): 2}))
    m.set_states(StateCounts({"up": 4}, {("completed", "local"): 1}))
    assert value(m, "beolaunch_nodes", state="up") == 4
    assert value(m, "beolaunch_nodes", state="busy") == 0
    assert value(m, "beolaunch_jobs", state="running", scheduler="slurm") == 0
    assert value(m, "beolaunch_jobs", state="completed", scheduler="local") == 1


def test_state_counts_groups_nodes_and_jobs(engine: Engine) -> None:
    manifest = build("/bin/prog", [Entry("/bin/prog", "file", 0o755, 1, "a" * 64)], owner=0)
    with transaction(engine) as session:
        add_node(session, "n1", state="up")
        add_node(session, "n2", state="up")
        add_node(session, "n3", state="drained")
        record_submitted_manifest(session, manifest)
        for scheduler in ("local", "local", "slurm"):
            record_job(session, scheduler=scheduler, uid=0, manifest_id=manifest.id)
    with transaction(engine, readonly=True) as session:
        counts = state_counts(session)
    assert counts.nodes == {"up": 2, "drained": 1}
    assert counts.jobs == {("pending", "local"): 2, ("pending", "slurm"): 1}


def test_dbwork_times_each_call_by_kind(engine: Engine) -> None:
    m = Metrics()

    async def main() -> None:
        db = DbWork(engine, timing=m.db_timed)
        try:
            await db.read(state_counts)
            await db.write(lambda s: add_node(s, "n1"))
            await db.run(lambda: None)
            await db.post("lane", "a piece", lambda: None)
        finally:
            await db.close()

    asyncio.run(main())
    for kind in ("read", "write", "run", "post"):
        assert value(m, "beolaunch_db_query_seconds_count", kind=kind) == 1, kind


def test_concurrent_scrapes_share_one_read_and_a_lost_database_is_said() -> None:
    m = Metrics()
    reads: list[int] = []
    gate = asyncio.Event()
    away = False

    async def read() -> StateCounts:
        reads.append(1)
        if away:
            raise DatabaseUnavailable("sqlite:///state.db", "locked")
        await gate.wait()
        return StateCounts({"up": 2}, {})

    async def main() -> None:
        nonlocal away
        scrapes = Scrapes(m, read, lambda: 7)
        both = asyncio.gather(scrapes.refresh(), scrapes.refresh())
        await asyncio.sleep(0)
        gate.set()
        await both
        assert len(reads) == 1
        assert value(m, "beolaunch_nodes", state="up") == 2
        assert value(m, "beolaunch_database_up") == 1
        away = True
        await scrapes.refresh()
        assert len(reads) == 2

    asyncio.run(main())
    assert value(m, "beolaunch_database_up") == 0
    assert value(m, "beolaunch_nodes", state="up") == 2  # the last reading stays
    assert value(m, "beolaunch_nodes_connected") == 7


def test_get_metrics_answers_the_text_format_and_nothing_but_reads() -> None:
    m = Metrics()
    m.filled(FillReport(objects_total=2, objects_hit=1, bytes_from_master=10))

    async def read() -> StateCounts:
        return StateCounts({"up": 1}, {("running", "local"): 1})

    async def main() -> tuple[int, str, str, int]:
        app = status_app(metrics_routes(Scrapes(m, read, lambda: 1)))
        async with TestClient(TestServer(app)) as client:
            got = await client.get("/metrics")
            text = await got.text()
            posted = await client.post("/metrics")
            return got.status, got.headers["Content-Type"], text, posted.status

    status, content_type, text, posted = asyncio.run(main())
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["beolaunch_cache_hits"].type == "counter"
    assert families["beolaunch_jobs"].documentation
    assert posted == 405


def test_the_dashboard_names_only_series_the_registry_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36  # Grafana 9.x/10.x dashboards
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    exposed = {name for name, _labels in samples(Metrics())}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    named = {name for e in exprs for name in re.findall(r"\bbeolaunch_[a-z_]+", e)}
    assert named and named <= exposed, sorted(named - exposed)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("nodes", "jobs", "hit rate", "bytes", "fill", "launch", "boot", "database"):
        assert topic in titles, topic
