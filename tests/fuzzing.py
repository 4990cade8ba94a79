"""Settings shared by the hypothesis fuzz tests (issue 12, "Also").

Each fuzzed input has a quick test (a few hundred cases, in ``make test-quick``)
and a slow one with :data:`FULL` cases (marked ``slow``; ``make test`` runs it).
No example database is written: a failure found once is kept as an ``@example``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

#: Cases per fuzzed input in the slow tests (issue 12 asks for at least 10,000).
FULL = 10_000
#: Cases in the quick tests.
QUICK = 300

_BASE = settings(
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def quick() -> settings:
    return settings(_BASE, max_examples=QUICK)


def full() -> settings:
    return settings(_BASE, max_examples=FULL)
