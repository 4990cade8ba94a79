"""The Slurm prolog (``beoctl slurm prolog``): admit a Beolaunch job on this node.

slurmd runs it as root in the node, with ``PrologFlags=Alloc`` on every
allocated node before any step, and with only ``SLURM_*`` variables set. A job
whose comment has no ``beolaunch:manifest=ID`` passes untouched: nothing is
read or contacted. Otherwise the node agent is asked, on its local socket, to
admit the job (docs/slurm.md, "Admission"); the answer comes once the master
recorded this node's acceptance or refusal. Bounded: never waits past
``prolog_timeout`` less :data:`MARGIN_S`.

On every job's start path: imports only the standard library, the config
and the socket client (no SQLAlchemy, no asyncio, no click).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.errors import AdmissionRefusedError, HookEnvironmentError

#: A manifest id in the job's comment (``beolaunch:manifest=`` + sha256).
MANIFEST_RE = re.compile(r"beolaunch:manifest=([0-9a-f]{64})(?![0-9a-f])")
#: Seconds kept from PrologEpilogTimeout: the prolog answers before slurmd kills it.
MARGIN_S = 5.0


def manifest_of(comment: str | None) -> str | None:
    """The manifest id a Slurm job's comment carries, or None (not a Beolaunch job)."""
    found = MANIFEST_RE.search(comment or "")
    return found.group(1) if found else None


def _int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name)
    if value is None or not value.isdigit():
        raise HookEnvironmentError(name, value)
    return int(value)


def _str(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise HookEnvironmentError(name, value)
    return value


def admit_request(env: Mapping[str, str], timeout: float) -> dict[str, Any] | None:
    """The agent request for the job in slurmd's prolog environment ``env``;
    None for a job without a manifest. Raises HookEnvironmentError."""
    manifest = manifest_of(env.get("SLURM_JOB_COMMENT"))
    if manifest is None:
        return None
    return {
        "op": "admit",
        "slurm_job": _int(env, "SLURM_JOB_ID"),
        "manifest": manifest,
        "uid": _int(env, "SLURM_JOB_UID"),
        "gid": _int(env, "SLURM_JOB_GID"),
        "user": _str(env, "SLURM_JOB_USER"),
        "work_dir": env.get("SLURM_JOB_WORK_DIR") or None,
        "nodes": nodes_of(env),
        "timeout": timeout,
    }


def nodes_of(env: Mapping[str, str]) -> list[str] | None:
    """The job's nodes from SLURM_NODELIST (``node[1-4]``), sorted; None when
    unset or not a host list (the master then gives this node no peer)."""
    from launcher.errors import SlurmOutputError
    from launcher.slurm.parse import expand_hostlist

    text = env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not text:
        return None
    try:
        names = expand_hostlist(text)
    except SlurmOutputError:
        return None
    return sorted(set(names)) or None


def socket_for(config_path: Path | None, env: Mapping[str, str]) -> tuple[str, int]:
    """The agent socket of this node and the prolog timeout, from the config."""
    from launcher import config as beoconfig
    from launcher.slurm.settings import agent_socket

    config = beoconfig.load(str(config_path) if config_path else None, env)
    node = _str(env, "SLURMD_NODENAME")
    return agent_socket(config.slurm, config.state_dir, node), config.slurm.prolog_timeout


def run(env: Mapping[str, str], config_path: Path | None) -> int | None:
    """Admit the job of ``env`` on this node; its Beolaunch job id, or None when
    the job is not Beolaunch's (nothing contacted).

    Raises AdmissionRefusedError (the reason), LocalSocketError (agent not
    reachable, no answer in time), HookEnvironmentError, ConfigError."""
    if manifest_of(env.get("SLURM_JOB_COMMENT")) is None:
        return None
    from launcher.node.localproto import request

    path, timeout = socket_for(config_path, env)
    bound = max(1.0, timeout - MARGIN_S)
    doc = admit_request(env, bound - 0.5)
    assert doc is not None
    answer = request(path, doc, bound)
    if answer.get("accepted") is not True:
        raise AdmissionRefusedError(doc["slurm_job"], str(answer.get("reason") or "no reason"))
    job = answer.get("job")
    return job if isinstance(job, int) else None
