"""Running a command on the virtual cluster's nodes: nsenter vs ``ip netns exec``.

Figure: ``/bin/true`` on 4 nodes one after another through
:func:`launcher.cluster.run_in_node` (``nsenter`` into the node's network and
UTS namespaces). Baseline: the same through ``ip netns exec``, which also makes
a mount namespace and remounts /sys. Median of many rounds, in one run, on a
cluster with its own names and subnet so a running demo is not disturbed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.record import report
from launcher import cluster as vc

NODES = 4
ROUNDS = 30
LAYOUT = vc.Layout(
    bridge="bbench0", veth_prefix="bbench", netns_prefix="beobench-node", subnet="10.79.250.0/24"
)


def median_seconds(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench.cluster needs root (network namespaces)")
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        try:
            spec = vc.up(state, NODES, layout=LAYOUT, cache_size="16M")

            def nsenter_all() -> None:
                for node in spec.nodes:
                    vc.run_in_node(node, ["/bin/true"], check=True)

            def ip_netns_exec_all() -> None:
                for node in spec.nodes:
                    subprocess.run(["ip", "netns", "exec", node.netns, "/bin/true"], check=True)

            nsenter_all()  # warm the page cache for both
            ip_netns_exec_all()
            figure = median_seconds(nsenter_all, ROUNDS)
            baseline = median_seconds(ip_netns_exec_all, ROUNDS)
        finally:
            vc.down(state, layout=LAYOUT)
    report(
        "cluster_exec_4_nodes",
        figure * 1000,
        baseline * 1000,
        "ms",
        "no slower than ip netns exec",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
