"""Getting a job's files onto its nodes: the part both engines share.

The embedded scheduler (:mod:`launcher.master.scheduler`) and Slurm admission
(:mod:`launcher.master.admission`) both send each node of a job a ``prepare``
(the manifest, where to fill from, the job's object capability, the node's
part of ``[envroot]``) and, once the node answers ``prepared`` accepted,
record its acceptance: the fill report, the objects its cache now holds and
the job's pins on them. What differs stays with the engines: the scheduler
waits for every node and records them together; admission records each node
at once (Slurm's prolog on every node is the barrier).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cachefs.manifest import Manifest as CachefsManifest
from cachefs.store import Store
from launcher.envconfig import EnvRootSettings
from launcher.master import fanout as distribution
from launcher.master.capability import CapabilityAuthorizer
from launcher.master.links import NodeLink
from launcher.state.models import Job, Node
from launcher.state.record import pin_many, record_acceptances, record_cached_many
from launcher.wire import FillReport, Prepare, Prepared, WireError

log = logging.getLogger(__name__)

#: (node link) -> [{"url", "kind"}]: where a node fetches objects from the master.
SourcesFor = Callable[[NodeLink], list[dict[str, str]]]


class Preparation:
    """What preparing a job on its nodes needs, built once and given to both engines."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        links: dict[str, NodeLink],
        *,
        sources: SourcesFor,
        capabilities: CapabilityAuthorizer,
        fanout: int = distribution.DEFAULT_FANOUT,
        envroot: EnvRootSettings | None = None,
        on_fill: Callable[[FillReport], None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        #: the connected nodes (shared with the control service, which fills it)
        self.links = links
        self.sources = sources
        #: issues each job's object capability (the cluster secret stays here)
        self.capabilities = capabilities
        self.fanout = fanout  # children per node in a job's distribution tree
        #: [envroot]: what nodes add to each root, and the late-file policy
        self.envroot = envroot or EnvRootSettings()
        #: told each accepting node's fill report as it arrives (metrics.Metrics.filled)
        self.on_fill = on_fill

    def document(self, manifest_id: str) -> dict[str, Any]:
        """The stored manifest document ``manifest_id`` (as the store holds it)."""
        with self.store.open(manifest_id) as f:
            doc: dict[str, Any] = json.loads(f.read())
        return doc

    def objects(self, manifest_id: str) -> list[str]:
        """The sha256 of every file body of stored manifest ``manifest_id``."""
        return list(CachefsManifest.from_document(self.document(manifest_id)).objects())

    def prepares(
        self,
        job_id: int,
        manifest_id: str,
        document: dict[str, Any],
        objects: Collection[str],
        late_policy: str | None,
        sources: Mapping[str, list[dict[str, str]]],
    ) -> dict[str, Prepare]:
        """A ``prepare`` for each node of ``sources`` (node -> where it fills from),
        all with one capability for the job's ``objects``; ``late_policy`` is the
        job's (only "fail" is sent: otherwise the nodes take ``[envroot]``'s)."""
        token = self.capabilities.issue(job_id, manifest_id, objects)
        envroot = self.envroot.for_nodes(late="fail" if late_policy == "fail" else None)
        return {
            node: Prepare(job_id, document, where, token, envroot)
            for node, where in sources.items()
        }

    def filled(self, node: str, message: Prepared) -> FillReport:
        """On the loop, as ``node``'s accepting ``message`` arrives: its fill report
        (:func:`fill_of`), passed on to :attr:`on_fill`."""
        fill = fill_of(node, message)
        if self.on_fill is not None:
            self.on_fill(fill)
        return fill


def fill_of(node: str, message: Prepared) -> FillReport:
    """The fill report of ``node``'s accepting ``message``; zeros (and a warning)
    when it is not sensible: the node's acceptance stands, its statistics are lost."""
    try:
        return FillReport.from_wire(message.fill)
    except WireError as exc:
        log.warning("node %s sent an impossible fill report for job %d: %s", node, message.job, exc)
        return FillReport()


def accept(
    session: Session, job: Job, fills: Mapping[str, tuple[Node, FillReport]], objects: list[str]
) -> None:
    """Record that each node of ``fills`` (name -> its row and fill report) accepted
    ``job``: what its fill cost, that its cache holds the job's ``objects``, and
    the job's pins on them there. A few statements for any number of nodes."""
    record_acceptances(session, job, list(fills.values()))
    ids = {row.id: name for name, (row, _fill) in fills.items()}
    record_cached_many(session, list(ids), objects)
    pin_many(session, ids, job.id, objects)


def node_row(session: Session, name: str) -> Node:
    """The row of node ``name`` (it has one: only registered nodes connect)."""
    return session.scalars(select(Node).where(Node.name == name)).one()


def node_rows(session: Session, names: list[str]) -> dict[str, Node]:
    """The rows of the named nodes, in one query (missing names are left out)."""
    rows = session.scalars(select(Node).where(Node.name.in_(names)))
    return {row.name: row for row in rows if row.name is not None}
