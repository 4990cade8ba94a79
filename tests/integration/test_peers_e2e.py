"""End to end: four cold nodes of a real virtual cluster fill one job's closure
from each other, and the master sends it about once.

A 4-node cluster in a state dir of its own (own names, subnet and ports from
``init_isolated``), a job submitted by a user the fixture creates, with a 16 MiB file of
random bytes in its closure; ``beoacct usage --json`` is the evidence.
"""

from __future__ import annotations

import json
import os
import re

from tests.integration import test_e2e
from tests.integration import vcluster as vc

#: slow, and skipped without root, iproute2, util-linux and useradd, as test_e2e
pytestmark = test_e2e.pytestmark

NODES = 4
DATA_BYTES = 16 << 20


def test_cold_nodes_fill_from_peers_and_the_master_sends_the_closure_about_once(
    vcluster: vc.Clusters,
) -> None:
    e = vcluster.e2e(NODES)
    data = e.work / "data.bin"
    data.write_bytes(os.urandom(DATA_BYTES))
    data.chmod(0o644)
    args = ("--include", str(data), "--", "/bin/true")
    done = e.beosub("-N", str(NODES), *args)
    assert done.returncode == 0, done.stderr

    dry = e.beosub("--dry-run", *args)
    m = re.search(r"(\d+) objects \((\d+) bytes\)", dry.stdout)
    assert m is not None, dry.stdout
    closure = int(m.group(2))
    rows = json.loads(e.admin("beoacct", "usage", "--json"))
    assert len(rows) == 1, rows
    row = rows[0]
    assert int(row["bytes_from_peers"]) > 0, row
    # The tree's root fetches everything from the master; a child that fell
    # back would add a second copy.
    assert closure <= int(row["bytes_from_master"]) < 2 * closure, (row, closure)
    # Every byte of every node came from somewhere: NODES copies in all.
    total = int(row["bytes_from_master"]) + int(row["bytes_from_peers"])
    assert total >= NODES * closure, (row, closure)
