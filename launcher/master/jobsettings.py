"""The ``[jobs]`` and ``[store]`` tables: root jobs, silent nodes, the per-user store quota.

:func:`launcher.config.load` hands both decoded tables to :func:`parse`; the master
gets the result as ``config.jobs``. Every key is optional::

    [jobs]
    allow_root = false        # uid 0 may submit
    node_timeout_s = 300      # seconds a node of a running job may be silent
    node_message_rate = 8000  # control messages a second each node may send

    [store]
    user_quota_bytes = 107374182400   # bytes each user's objects may hold; 0: none
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import ConfigError
from launcher.master.noderate import RATE_PER_S
from launcher.master.silence import NODE_TIMEOUT_S

#: The default per-user quota: 100 GiB.
USER_QUOTA_BYTES = 100 << 30
JOBS_KEYS = ("allow_root", "node_timeout_s", "node_message_rate")
STORE_KEYS = ("user_quota_bytes",)


@dataclass(frozen=True)
class JobsSettings:
    """The ``[jobs]`` table (root jobs, how long a node of a running job may be
    silent, how many messages a second a node may send: docs/limits.md) and
    ``[store] user_quota_bytes`` (0: none)."""

    allow_root: bool = False
    node_timeout_s: float = NODE_TIMEOUT_S
    user_quota_bytes: int = USER_QUOTA_BYTES
    node_message_rate: float = RATE_PER_S


def parse(path: Path, jobs: Mapping[str, Any], store: Mapping[str, Any]) -> JobsSettings:
    """Validate the decoded ``[jobs]`` and ``[store]`` tables (empty when absent);
    raises ConfigError naming the bad key."""
    for name, table, known in (("jobs", jobs, JOBS_KEYS), ("store", store, STORE_KEYS)):
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(
                path, f"{name}.{unknown[0]}", f"unknown key; expected {', '.join(known)}"
            )
    allow_root = jobs.get("allow_root", False)
    if not isinstance(allow_root, bool):
        raise ConfigError(path, "jobs.allow_root", f"expected true or false, got {allow_root!r}")
    timeout = jobs.get("node_timeout_s", NODE_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(path, "jobs.node_timeout_s", f"expected seconds > 0, got {timeout!r}")
    rate = jobs.get("node_message_rate", RATE_PER_S)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 1:
        raise ConfigError(
            path, "jobs.node_message_rate", f"expected messages a second >= 1, got {rate!r}"
        )
    quota = store.get("user_quota_bytes", USER_QUOTA_BYTES)
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise ConfigError(
            path, "store.user_quota_bytes", f"expected bytes >= 0 (0: none), got {quota!r}"
        )
    return JobsSettings(allow_root, float(timeout), quota, float(rate))


def render(settings: JobsSettings) -> dict[str, dict[str, Any]]:
    """The ``jobs`` and ``store`` tables of ``settings`` (inverse of :func:`parse`):
    the keys that differ from their defaults."""
    default = JobsSettings()
    jobs: dict[str, Any] = {}
    if settings.allow_root != default.allow_root:
        jobs["allow_root"] = settings.allow_root
    if settings.node_timeout_s != default.node_timeout_s:
        jobs["node_timeout_s"] = settings.node_timeout_s
    if settings.node_message_rate != default.node_message_rate:
        jobs["node_message_rate"] = settings.node_message_rate
    store: dict[str, Any] = {}
    if settings.user_quota_bytes != default.user_quota_bytes:
        store["user_quota_bytes"] = settings.user_quota_bytes
    return {"jobs": jobs, "store": store}
