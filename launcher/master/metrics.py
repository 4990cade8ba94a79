"""The master's Prometheus metrics, served as ``GET /metrics`` on the status service.

One :class:`Metrics` per master owns its own ``CollectorRegistry`` (never
prometheus_client's global one: two masters in one test process, or a library
importing prometheus_client, must not mix their series). Two ways in:

- **Events, on the loop**: fill reports as nodes accept a job (:meth:`Metrics.filled`),
  a job's exec sent (:meth:`Metrics.launched`), a boot ticket issued and that
  node's agent registering (:meth:`Metrics.boot_started`, :meth:`Metrics.node_up`),
  and each database call's time (:meth:`Metrics.db_timed`, from DbWork's threads:
  prometheus_client's instruments take a lock). Counters count from the master's
  start, as Prometheus expects (``rate()`` handles restarts).
- **States, at scrape time**: nodes and jobs by state are one ``GROUP BY`` each,
  read through DbWork when ``/metrics`` is asked (concurrent scrapes share one
  read). States change in many places (the scheduler, Slurm admission, the
  boot service, ``beoctl node drain`` in another process, a master restart);
  mirroring every change with events would drift, while the database is the
  one record of them all. What it costs: docs/observability.md.

Labels stay low-cardinality: states, the scheduler (local, slurm), the byte
source (master, peer), the kind of database call. No job ids, node names or
users: the endpoint needs no login (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from launcher.errors import BeolaunchError
from launcher.state.models import JOB_STATES, NODE_STATES, SCHEDULERS, Job, Node
from launcher.wire import FillReport

log = logging.getLogger(__name__)

#: Seconds: a node's cache fill for one job (cached: ms; 1 GiB from the master: tens of s).
FILL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Seconds: submit to exec (queue wait included: a full cluster makes it long).
LAUNCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Seconds: boot ticket to agent up (a PXE boot under TCG: ~8 s to stage 2).
BOOT_BUCKETS = (5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
#: Seconds: one database call in a DbWork thread (SQLite's busy timeout is 30 s).
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)
#: Kinds of DbWork call (dbwork.py): read/write transactions, run, posted lane work.
DB_KINDS = ("read", "write", "run", "post")
#: The text format every Prometheus reads (newer prometheus_client labels its
#: output version 1.0.0, which older servers predate; our names need none of its escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds a boot ticket's start is remembered waiting for the agent (a boot
#: that takes longer is not a boot the histogram should hold).
BOOT_FORGET_S = 3600.0
#: Boots remembered at once (a PXE storm of unknown MACs cannot grow it past this).
BOOTS_KEPT = 65536


@dataclass(frozen=True)
class StateCounts:
    """What the state database says at one scrape: node and job counts by state."""

    nodes: Mapping[str, int] = field(default_factory=dict)
    #: (state, scheduler) -> jobs
    jobs: Mapping[tuple[str, str], int] = field(default_factory=dict)


def state_counts(session: Session) -> StateCounts:
    """Nodes by state and jobs by (state, scheduler): two GROUP BY queries."""
    nodes = {
        str(state): int(n)
        for state, n in session.execute(select(Node.state, func.count()).group_by(Node.state))
    }
    jobs = {
        (str(state), str(scheduler)): int(n)
        for state, scheduler, n in session.execute(
            select(Job.state, Job.scheduler, func.count()).group_by(Job.state, Job.scheduler)
        )
    }
    return StateCounts(nodes, jobs)


class Metrics:
    """The master's instruments and the registry that exposes them."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.nodes = Gauge(
            "beolaunch_nodes",
            "Nodes by state in the state database, read at scrape time",
            ["state"],
            registry=r,
        )
        self.nodes_connected = Gauge(
            "beolaunch_nodes_connected",
            "Node agents with a live control session to this master",
            registry=r,
        )
        self.jobs = Gauge(
            "beolaunch_jobs",
            "Jobs by state and scheduler (local: beosub's embedded one; slurm) in the "
            "state database, read at scrape time",
            ["state", "scheduler"],
            registry=r,
        )
        self.database_up = Gauge(
            "beolaunch_database_up",
            "1 when the last scrape could read the state database; 0 when not "
            "(node and job counts are then the last ones read)",
            registry=r,
        )
        self.cache_hits = Counter(
            "beolaunch_cache_hits",
            "Objects a node's cache held already when it prepared a job (fill reports)",
            registry=r,
        )
        self.cache_misses = Counter(
            "beolaunch_cache_misses",
            "Objects a node fetched to prepare a job (fill reports)",
            registry=r,
        )
        self.fill_bytes = Counter(
            "beolaunch_fill_bytes",
            "Bytes nodes fetched to prepare jobs, by source (master: its object "
            "service; peer: another node's cache)",
            ["source"],
            registry=r,
        )
        self.fill_seconds = Histogram(
            "beolaunch_fill_seconds",
            "Seconds one node took to fill its cache for one job (fill reports)",
            buckets=FILL_BUCKETS,
            registry=r,
        )
        self.launch_seconds = Histogram(
            "beolaunch_launch_seconds",
            "Seconds from a beosub job's submission to its exec sent to every node "
            "(embedded scheduler; queue wait and fill included)",
            buckets=LAUNCH_BUCKETS,
            registry=r,
        )
        self.boot_seconds = Histogram(
            "beolaunch_boot_seconds",
            "Seconds from a node's boot ticket issued (its iPXE script) to its agent registering",
            buckets=BOOT_BUCKETS,
            registry=r,
        )
        self.db_seconds = Histogram(
            "beolaunch_db_query_seconds",
            "Seconds one database call took in the master's database threads, by kind "
            "(read, write: one transaction; run: a function's own transactions; post: "
            "ordered lane work)",
            ["kind"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        # Every labelled series exists from the start (at 0), so a dashboard's
        # rate() has a first point before the first event.
        for state in NODE_STATES:
            self.nodes.labels(state=state)
        for state in JOB_STATES:
            for scheduler in SCHEDULERS:
                self.jobs.labels(state=state, scheduler=scheduler)
        for source in ("master", "peer"):
            self.fill_bytes.labels(source=source)
        for kind in DB_KINDS:
            self.db_seconds.labels(kind=kind)
        #: node name -> clock() when its boot ticket was issued
        self._booting: dict[str, float] = {}

    # --- events (on the loop, but for db_timed) ---------------------------------

    def filled(self, fill: FillReport) -> None:
        """A node accepted a job with this fill report."""
        self.cache_hits.inc(fill.objects_hit)
        self.cache_misses.inc(fill.objects_total - fill.objects_hit)
        self.fill_bytes.labels(source="master").inc(fill.bytes_from_master)
        self.fill_bytes.labels(source="peer").inc(fill.bytes_from_peers)
        self.fill_seconds.observe(fill.fill_seconds)

    def launched(self, seconds: float) -> None:
        """A job's exec went to every node ``seconds`` after its submission."""
        self.launch_seconds.observe(seconds)

    def boot_started(self, node: str) -> None:
        """Node ``node`` got a boot ticket (a new one replaces its older start)."""
        now = self.clock()
        self._booting.pop(node, None)
        self._booting[node] = now
        while self._booting:  # oldest first: drop the forgotten and the excess
            oldest, started = next(iter(self._booting.items()))
            if now - started <= BOOT_FORGET_S and len(self._booting) <= BOOTS_KEPT:
                break
            del self._booting[oldest]

    def node_up(self, node: str) -> None:
        """Node ``node``'s agent registered: a boot ends if one was under way."""
        started = self._booting.pop(node, None)
        if started is not None and (took := self.clock() - started) <= BOOT_FORGET_S:
            self.boot_seconds.observe(took)

    def db_timed(self, kind: str, seconds: float) -> None:
        """One DbWork call of ``kind`` (DB_KINDS) took ``seconds`` (any thread)."""
        self.db_seconds.labels(kind=kind).observe(seconds)

    # --- scrape ---------------------------------------------------------------

    def set_states(self, counts: StateCounts) -> None:
        """Set the gauges from one scrape's reading (states absent from it: 0)."""
        for state in NODE_STATES:
            self.nodes.labels(state=state).set(counts.nodes.get(state, 0))
        for state in JOB_STATES:
            for scheduler in SCHEDULERS:
                self.jobs.labels(state=state, scheduler=scheduler).set(
                    counts.jobs.get((state, scheduler), 0)
                )

    def exposition(self) -> bytes:
        """Every series in the Prometheus text format."""
        return generate_latest(self.registry)


class Scrapes:
    """``GET /metrics``: read the states (one read shared by concurrent scrapes),
    then answer the text format."""

    def __init__(
        self,
        metrics: Metrics,
        read: Callable[[], Awaitable[StateCounts]],
        connected: Callable[[], int],
    ) -> None:
        self.metrics = metrics
        self.read = read
        self.connected = connected
        self._reading: asyncio.Future[None] | None = None

    async def refresh(self) -> None:
        """Read the states once; a scrape arriving meanwhile waits for that read."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._refresh())
            self._reading.add_done_callback(self._read_done)
        await asyncio.shield(self._reading)

    def _read_done(self, _future: asyncio.Future[None]) -> None:
        self._reading = None

    async def _refresh(self) -> None:
        self.metrics.nodes_connected.set(self.connected())  # memory: always current
        try:
            counts = await self.read()
        except BeolaunchError as exc:  # DatabaseUnavailable, StateError: serve the rest
            log.warning("/metrics: cannot read node and job states: %s", exc)
            self.metrics.database_up.set(0)
            return
        self.metrics.database_up.set(1)
        self.metrics.set_states(counts)

    async def handle(self, _request: web.Request) -> web.Response:
        await self.refresh()
        response = web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response


def metrics_routes(scrapes: Scrapes) -> list[web.RouteDef]:
    """The status service's ``GET /metrics`` (no login: counts only)."""
    return [web.get("/metrics", scrapes.handle)]
