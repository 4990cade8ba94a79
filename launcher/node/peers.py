"""The node agent's peer object service: its cache served to other nodes.

The same protocol as the master's object service (cachefs.service) over the
cache directory, read-only (cachefs.store.StoreReader: nothing is cleaned or
written by serving), with the cache's downloads in flight streamed as they grow
(cachefs.cache.flights) so a child need not wait for its parent's whole copy.

Trust model: a peer request must present a capability the master sent this
node in a job's ``prepare`` (:mod:`launcher.master.capability`; one per job,
the same on all of the job's nodes), and gets only objects of that job's
manifest. The node holds no cluster secret, so it compares, in constant time,
with the capabilities it was given; a job's capability is forgotten at its
release. Until its ``prepare`` arrives, a request naming a job (header
Beolaunch-Job) that this node has not yet begun to fill waits, bounded, and
is then refused with 401. A receiver verifies every object's sha256, so a
peer can at worst waste its bandwidth, never place a wrong file.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web

from cachefs.cache import NodeCache
from cachefs.service import Grant, make_app, serve_app
from cachefs.store import StoreReader

#: Seconds the agent's shutdown waits for peer requests in progress.
STOP_S = 1.0


class PeerTokens:
    """The capabilities peers may present: one per job this node was asked to
    prepare, each granting that job's objects. Used from the agent's loop only."""

    def __init__(self) -> None:
        self._jobs: dict[int, tuple[bytes, frozenset[str]]] = {}

    def learn(self, job: int, token: str, objects: Iterable[str]) -> None:
        """Peers filling ``job`` present ``token`` and may have ``objects``."""
        if token:
            self._jobs[job] = (token.encode(), frozenset(objects))

    def forget(self, job: int) -> None:
        self._jobs.pop(job, None)

    def __call__(self, token: str) -> Grant | None:
        encoded = token.encode()
        found: Grant | None = None
        # every one compared, in constant time each: no early exit on a match
        for known, objects in list(self._jobs.values()):
            if hmac.compare_digest(encoded, known) and found is None:
                found = objects.__contains__
        return found


async def serve_peers(cache: NodeCache, tokens: PeerTokens, host: str, port: int) -> web.AppRunner:
    """Start serving ``cache`` to peers on host:port; stop with ``await runner.cleanup()``.

    Raises OSError when the port is taken."""
    app = make_app(StoreReader(cache.root), tokens, flights=cache.flights)
    # A stream waiting for a download must not hold the agent's shutdown up.
    return await serve_app(app, host, port, shutdown_timeout=STOP_S)
