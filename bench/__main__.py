"""``make bench``: run every benchmark; results append to bench/results.json."""

from __future__ import annotations

from bench import (
    accounting_query,
    agent_exec,
    agent_output,
    beosub_start,
    boot,
    boot_mounts,
    cache_fill,
    closure,
    cluster,
    late,
    launch,
    load,
    master_dispatch,
    metrics_scrape,
    pynamic,
    sandbox_start,
    scale,
    scale_fanout,
    scale_queries,
    scale_report,
    slurm_prolog,
    status_sse,
    step_enter,
    syslogload,
    view,
)
from bench.record import RESULTS

BENCHMARKS = (
    accounting_query,
    closure,
    cache_fill,
    view,
    cluster,
    sandbox_start,
    agent_exec,
    agent_output,
    master_dispatch,
    beosub_start,
    launch,
    late,
    load,
    scale,
    scale_fanout,
    scale_queries,
    scale_report,
    metrics_scrape,
    status_sse,
    syslogload,
    step_enter,
    slurm_prolog,
    pynamic,
    boot,
    boot_mounts,
)


def main() -> None:
    RESULTS.unlink(missing_ok=True)
    for bench in BENCHMARKS:
        bench.main()


if __name__ == "__main__":
    main()
