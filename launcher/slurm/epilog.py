"""The Slurm epilog (``beoctl slurm epilog``): release a Beolaunch job on this node.

Asks the node agent (local socket, root only) to end what is left in the
job's env root, unpin its objects, keep or remove the root, and report the
job's exit to the master. Idempotent: a job the agent does not hold (not
Beolaunch's, or released already) is a no-op. A job without
``beolaunch:manifest=`` in its comment is not even asked about.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from launcher.errors import HookEnvironmentError
from launcher.slurm.prolog import MARGIN_S, manifest_of, socket_for

_EXIT2 = re.compile(r"(\d+):(\d+)")


def exit_status(env: Mapping[str, str]) -> int:
    """The job's status as a shell reports it (128+N for signal N), from
    ``SLURM_JOB_EXIT_CODE2`` (``code:signal``), else ``SLURM_JOB_EXIT_CODE``
    (a raw wait status); 0 when Slurm gives neither."""
    two = _EXIT2.fullmatch(env.get("SLURM_JOB_EXIT_CODE2", ""))
    if two:
        code, sig = int(two.group(1)), int(two.group(2))
        return 128 + sig if sig else code
    raw = env.get("SLURM_JOB_EXIT_CODE", "")
    if raw.isdigit():
        wait = int(raw)
        return 128 + (wait & 0x7F) if wait & 0x7F else (wait >> 8) & 0xFF
    return 0


def run(env: Mapping[str, str], config_path: Path | None) -> bool:
    """Release the job of ``env`` on this node; whether the agent held it.

    Raises LocalSocketError, HookEnvironmentError, ConfigError."""
    if manifest_of(env.get("SLURM_JOB_COMMENT")) is None:
        return False
    from launcher.node.localproto import request

    path, timeout = socket_for(config_path, env)
    job = env.get("SLURM_JOB_ID", "")
    if not job.isdigit():
        raise HookEnvironmentError("SLURM_JOB_ID", job or None)
    doc = {"op": "release", "slurm_job": int(job), "status": exit_status(env)}
    answer = request(path, doc, max(1.0, timeout - MARGIN_S))
    return bool(answer.get("released"))
