"""Where each node of a job fetches its objects: a distribution tree over the job's nodes.

Node ``k`` of the ordered list (from 0) has parent ``(k - 1) // fanout``, so the
first node (the root) fetches from the master and every other node first from
its parent's peer object service, then from the master: the master sends the
closure about once, each node forwards it to at most ``fanout`` children. A
node also lists its grandparent, so the children of a parent lost mid-fill go on
from one level up rather than all turning to the master. A
parent streams an object it is still downloading (cut-through, cachefs.cache.
flights), so the depth of the tree adds latency, not a copy time per level.

Nodes that serve no peers (no ``peer_port`` in their hello) are put last, so
they are leaves; nodes that already hold more of the job's objects are put
first, so they are near the root. A child whose parent cannot serve it, or
that falls back, still has the master.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, func, select

from cachefs.manifest import Manifest
from launcher.master.links import NodeLink
from launcher.state.db import transaction
from launcher.state.models import CacheEntry, Node

#: Children per node. Measured with bench.launch on this machine (see docs/execution.md).
DEFAULT_FANOUT = 2

#: Peers each node may fetch from before the master: its parent, then its
#: grandparent (a parent lost mid-fill is routed around, not onto the master).
ANCESTORS = 2

#: (node link) -> [{"url", "kind"}]: the master's object service for a node.
MasterSources = Callable[[NodeLink], list[dict[str, str]]]


def parents(nodes: Sequence[str], fanout: int) -> dict[str, str | None]:
    """Each node's parent in a tree of ``fanout`` children per node, filled in order
    (breadth first); the first node is the root (parent None).

    Raises ValueError for a fanout below 1."""
    if fanout < 1:
        raise ValueError(f"fanout must be >= 1, got {fanout}")
    return {name: (nodes[(k - 1) // fanout] if k else None) for k, name in enumerate(nodes)}


def order(
    nodes: Sequence[str], can_serve: Callable[[str], bool], held: Mapping[str, int]
) -> list[str]:
    """``nodes`` with those that serve peers first, among them those holding the
    most objects (``held``: name -> count) first; otherwise as given."""
    rank = {name: i for i, name in enumerate(nodes)}
    return sorted(nodes, key=lambda n: (not can_serve(n), -held.get(n, 0), rank[n]))


def assign(
    nodes: Sequence[str],
    links: Mapping[str, NodeLink],
    master: MasterSources,
    *,
    fanout: int = DEFAULT_FANOUT,
    held: Mapping[str, int] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """The sources of each node of a job, in the order to try: [parent peer,
    grandparent peer, master]; a node whose parent dies mid-fill (its peer
    service breaks off) goes on from its grandparent, so the master still sends
    the closure about once. Ancestors that serve no peers are left out; the root
    has [master] only."""
    ordered = order(nodes, lambda n: links[n].peer_url() is not None, held or {})
    tree = parents(ordered, fanout)
    return {name: peer_sources(name, tree, links) + master(links[name]) for name in nodes}


def peer_sources(
    name: str, tree: Mapping[str, str | None], links: Mapping[str, NodeLink]
) -> list[dict[str, str]]:
    """The peers ``name`` fills from before the master: its first :data:`ANCESTORS`
    ancestors in ``tree`` that are connected (in ``links``) and serve peers."""
    peers: list[dict[str, str]] = []
    ancestor = tree[name]
    for _ in range(ANCESTORS):
        if ancestor is None:
            break
        link = links.get(ancestor)
        url = link.peer_url() if link is not None else None
        if url:
            peers.append({"url": url, "kind": "peer"})
        ancestor = tree[ancestor]
    return peers


def held(engine: Engine, nodes: Sequence[str], document: dict[str, Any]) -> dict[str, int]:
    """How many of the manifest's objects each node's cache holds, as the state
    database last heard (a hint: a node may have evicted some since)."""
    objects = list(Manifest.from_document(document).objects())
    if not objects or not nodes:
        return {}
    with transaction(engine, readonly=True) as session:
        rows = session.execute(
            select(Node.name, func.count())
            .join(CacheEntry, CacheEntry.node_id == Node.id)
            .where(Node.name.in_(list(nodes)), CacheEntry.object_sha256.in_(objects))
            .group_by(Node.name)
        ).all()
    return {str(name): int(count) for name, count in rows if name is not None}
