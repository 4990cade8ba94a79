"""When the master last heard from each node, and which nodes have been silent too long.

A node agent that goes silent (killed, its machine powered off, the network
cut) cannot report its tasks' exits. Its tasks may still run where it may come
back (the agent holds their exits and sends them with its next ``hello``), so
the master waits, but not forever: once nothing has been heard from a node of
a running job for ``timeout_s`` (its agent heartbeats every 5 s), its tasks are
lost and the job ends ``node_fail``, as Slurm ends a job whose node stopped
answering for ``SlurmdTimeout`` (300 s by default, which is ours too:
``[jobs] node_timeout_s``).

The clock runs from the node's last message, whether or not its connection
still looks open (a cut cable leaves a TCP connection open for minutes), and
from the master's start for nodes not heard from since. Times are monotonic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds without a word from a node of a running job before its tasks are lost.
NODE_TIMEOUT_S = 300.0
#: Seconds between two looks for silent nodes.
SWEEP_S = 1.0


class Silence:
    """Last contact per node; :meth:`silent` names those past ``timeout_s``."""

    def __init__(
        self, *, timeout_s: float = NODE_TIMEOUT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self.started = clock()
        self._heard: dict[str, float] = {}

    def heard(self, node: str) -> None:
        """Anything came from ``node`` just now."""
        self._heard[node] = self.clock()

    def silent_for(self, node: str) -> float:
        """Seconds since ``node`` was last heard (or since the master started)."""
        return self.clock() - self._heard.get(node, self.started)

    def lost(self, node: str) -> str | None:
        """Why ``node`` counts as lost now, or None while it may still answer."""
        if self.silent_for(node) < self.timeout_s:
            return None
        since = "" if node in self._heard else " since the master started"
        return f"node {node} lost: nothing heard from it for {self.timeout_s:g} s{since}"
