"""``beostat nodes`` and ``beoacct usage`` read a cluster in a few SQL statements
of a few parameters, whatever its size (issue 15: a thousand nodes, 100,000
job-node records, under a second): a query per node or per job would show as
dozens of statements here, and a job id list as dozens of parameters (SQLite
refuses more than 32,766 in a statement).

Counted with SQLAlchemy's ``before_cursor_execute`` on a database of 60 nodes
and 400 job-node records, filled by the scale benchmark's own populate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from bench.scale_queries import populate
from launcher import acct
from launcher.cli.nodetable import node_row
from launcher.master.users import _node_rows
from launcher.state.db import transaction
from launcher.state.nodes import list_nodes

USER = 1000
NODES, RECORDS = 60, 400
#: the most statements any of READS may issue, and parameters in one of them:
#: far fewer than NODES or the jobs
MAX_STATEMENTS = 3
MAX_PARAMETERS = 8

READS: dict[str, Callable[[Session], Any]] = {
    # the master's GET /nodes (beostat nodes with a master running)
    "master_nodes": _node_rows,
    # beostat nodes without a master (root, straight from the database)
    "cli_nodes": lambda s: [node_row(n) for n in list_nodes(s)],
    "usage_root": lambda s: acct.table(s, "usage", {"by": "job"}, None).rows,
    "usage_user": lambda s: acct.table(s, "usage", {"by": "job"}, USER).rows,
    "usage_by_node": lambda s: acct.table(s, "usage", {"by": "node"}, None).rows,
    "usage_by_node_user": lambda s: acct.table(s, "usage", {"by": "node"}, USER).rows,
    # beoacct report's rows (issue 16)
    "timeline_root": lambda s: acct.table(s, "timeline", {}, None).rows,
    "timeline_user": lambda s: acct.table(s, "timeline", {}, USER).rows,
}


def statements(engine: Engine, read: Callable[[Session], Any]) -> tuple[int, int, int]:
    """(SQL statements ``read`` issued, most parameters one had, rows it returned)."""
    count, most = 0, 0

    def counted(_conn: object, _cursor: object, _sql: str, parameters: Any, *_args: object) -> None:
        nonlocal count, most
        count += 1
        most = max(most, len(parameters or ()))

    with transaction(engine, readonly=True) as session:
        event.listen(engine, "before_cursor_execute", counted)
        try:
            rows = len(read(session))
        finally:
            event.remove(engine, "before_cursor_execute", counted)
    return count, most, rows


def test_reads_take_a_few_statements_not_one_per_node_or_job(engine: Engine) -> None:
    counts = populate(engine, NODES, RECORDS, USER)
    expected_rows = {
        "master_nodes": NODES,
        "cli_nodes": NODES,
        "usage_root": counts["jobs"],
        "usage_user": counts["user_jobs"],
        "usage_by_node": NODES,
        "timeline_root": counts["jobs"],
        "timeline_user": counts["user_jobs"],
    }
    found = {name: statements(engine, read) for name, read in READS.items()}
    for name, (count, most, rows) in found.items():
        assert count <= MAX_STATEMENTS, f"{name}: {count} statements for {rows} rows"
        assert most <= MAX_PARAMETERS, f"{name}: a statement of {most} parameters"
        if name in expected_rows:
            assert rows == expected_rows[name], name
    with transaction(engine, readonly=True) as session:  # the master's columns, in list order
        assert _node_rows(session) == [
            (n.name, n.state, n.state_reason, n.address, n.last_seen) for n in list_nodes(session)
        ]
    assert counts["user_jobs"] > MAX_STATEMENTS  # the user's rows would show a per-job query
