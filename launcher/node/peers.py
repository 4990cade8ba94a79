"""The node agent's peer object service: its cache served to other nodes.

The same protocol as the master's object service (cachefs.service) over the
cache directory, read-only (cachefs.store.StoreReader: nothing is cleaned or
written by serving), with the cache's downloads in flight streamed as they grow
(cachefs.cache.flights) so a child need not wait for its parent's whole copy.

Trust model: the bearer token is the one the master put in the jobs' ``prepare``
messages (the master's object service checks the same one). The agent learns it
from each ``prepare``; until the first one, every request is refused with 401,
after a bounded wait when the request names a job (header Beolaunch-Job) that
this node has not yet begun to fill. A receiver verifies every object's sha256,
so a peer can at worst waste its bandwidth, never place a wrong file.
"""

from __future__ import annotations

import hmac
from collections import deque

from aiohttp import web

from cachefs.cache import NodeCache
from cachefs.service import make_app, serve_app
from cachefs.store import StoreReader

#: Tokens remembered (a new cluster secret after a master restart adds one).
TOKENS_KEPT = 4
#: Seconds the agent's shutdown waits for peer requests in progress.
STOP_S = 1.0


class PeerTokens:
    """The tokens peers may present: those of the ``prepare`` messages received."""

    def __init__(self) -> None:
        self._tokens: deque[bytes] = deque(maxlen=TOKENS_KEPT)

    def learn(self, token: str) -> None:
        encoded = token.encode()
        if token and encoded not in self._tokens:
            self._tokens.append(encoded)

    def __call__(self, token: str) -> bool:
        encoded = token.encode()
        # every one compared, in constant time each: no early exit on a match
        return sum(hmac.compare_digest(encoded, t) for t in list(self._tokens)) > 0


async def serve_peers(cache: NodeCache, tokens: PeerTokens, host: str, port: int) -> web.AppRunner:
    """Start serving ``cache`` to peers on host:port; stop with ``await runner.cleanup()``.

    Raises OSError when the port is taken."""
    app = make_app(StoreReader(cache.root), tokens, flights=cache.flights)
    # A stream waiting for a download must not hold the agent's shutdown up.
    return await serve_app(app, host, port, shutdown_timeout=STOP_S)
