"""The node registry as a table: what ``beoctl node list`` prints, and ``beostat nodes``
when no master runs.

Its own module, not ``beoctl/node.py``'s: importing anything under ``beoctl``
imports the whole ``beoctl`` group (boot, cluster, master...), 0.4 s that
``beostat`` paid on every run.
"""

from __future__ import annotations

from launcher.state.models import Node

NODE_COLUMNS = ("name", "mac", "address", "state", "reason", "last_seen")
#: Pending nodes have no name yet: they are known by MAC, the address they last asked
#: from (in proxy mode accept keeps it: boot tickets go to it alone) and when they asked.
PENDING_COLUMNS = ("mac", "address", "first_seen", "last_seen", "reason")


def node_row(node: Node) -> dict[str, object]:
    """A node's row, keyed by NODE_COLUMNS and PENDING_COLUMNS."""
    return {
        "name": node.name,
        "mac": node.mac,
        "address": node.address,
        "state": node.state,
        "reason": node.state_reason,
        "last_seen": node.last_seen,
        "first_seen": node.created_at,
    }
