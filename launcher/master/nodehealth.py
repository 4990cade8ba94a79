"""A node's own problems (a site mount that failed) keep it out of scheduling.

A booted node reports what is wrong with it in its ``hello`` and, when that
changes, in a ``health`` message (:mod:`launcher.node.sitemounts` retries a
failed mount and says when it succeeds). With any problem the node is
``drained`` with the reason :data:`HEALTH_REASON` followed by the problems,
so ``beoctl node list`` and the status page show why; with none left that
drain is lifted. The prefix marks the drain as the node's, as Slurm's Node
Health Check marks its own with ``NHC:``: a drain an admin made
(``beoctl node drain``), or one made by a refused job, is never lifted by a
node that feels better, and a node with problems under an admin's drain keeps
the admin's reason (its problems are still recorded as an event).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from launcher.state.models import Node
from launcher.state.record import record_event

#: How the drain reason of a node kept out by its own problems starts.
HEALTH_REASON = "node health: "
#: Longest drain reason made from a node's problems (up to 32 lines of 1024 come).
MAX_REASON = 1024


def health_drained(node: Node) -> bool:
    """Whether ``node`` is drained by its own problems (not by an admin or a job)."""
    return node.state == "drained" and (node.state_reason or "").startswith(HEALTH_REASON)


def record_health(session: Session, node: Node, problems: Sequence[str], *, running: bool) -> bool:
    """Apply the problems ``node`` reports to its row (``running``: a job runs on it,
    so lifted it is ``busy``); record an event when that changes anything.
    Returns whether a drain of its own was lifted (the scheduler has a node more)."""
    ours = health_drained(node)
    if problems:
        reason = HEALTH_REASON + "; ".join(problems)
        if len(reason) > MAX_REASON:  # a table cell, not a log: the event has them all
            reason = reason[: MAX_REASON - 3] + "..."
        if node.state == "drained" and not ours:
            record_event(
                session,
                f"node {node.name} reports: {'; '.join(problems)} (it stays drained: "
                f"{node.state_reason})",
                node=node,
            )
        elif node.state_reason != reason:
            node.state, node.state_reason = "drained", reason
            record_event(
                session,
                f"node {node.name} kept out of scheduling: {'; '.join(problems)}",
                node=node,
            )
        return False
    if not ours:
        return False
    node.state, node.state_reason = ("busy" if running else "up"), None
    record_event(session, f"node {node.name}: no problems left, back in scheduling", node=node)
    return True
