"""Where a Slurm job's env root is, for ``beonode step --slurm-job ID``.

The step runs as the job's user; the node agent answers on its local socket
only to that uid (or root), so a user cannot enter another's root this way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from launcher.errors import HookEnvironmentError, LocalSocketError
from launcher.node.localproto import request

#: Seconds to wait for the agent (it answers from memory).
LOOKUP_S = 10.0


@dataclass(frozen=True)
class StepRoot:
    root: str
    tmp: str
    home: str | None
    job: int  # the master's job id
    #: host directories bound at the same path (site binds, the home: sitebinds.py)
    binds: tuple[str, ...] = ()


def agent_socket_from_config() -> str:
    """This node's agent socket from the config's ``[slurm] agent_socket``
    (``%n`` = ``$SLURMD_NODENAME``). Raises ConfigError, HookEnvironmentError."""
    from launcher import config as beoconfig
    from launcher.slurm.settings import agent_socket

    node = os.environ.get("SLURMD_NODENAME")
    if not node:
        raise HookEnvironmentError("SLURMD_NODENAME", None)
    config = beoconfig.load(None)
    return agent_socket(config.slurm, config.state_dir, node)


def slurm_root(slurm_job: int, socket_path: str | None) -> StepRoot:
    """Ask the agent at ``socket_path`` (default: from the config) for the job's
    root. Raises LocalSocketError (not admitted here, not this user's, no agent)."""
    path = socket_path or agent_socket_from_config()
    answer = request(path, {"op": "root", "slurm_job": slurm_job}, LOOKUP_S)
    root, tmp, home, job = (answer.get(k) for k in ("root", "tmp", "home", "job"))
    if not isinstance(root, str) or not isinstance(tmp, str) or not isinstance(job, int):
        raise LocalSocketError(path, f"the answer for slurm job {slurm_job} lacks root/tmp/job")
    binds = answer.get("binds", [])  # absent from an older agent
    if not isinstance(binds, list) or not all(isinstance(b, str) for b in binds):
        raise LocalSocketError(path, f"the answer for slurm job {slurm_job} has bad binds")
    return StepRoot(root, tmp, home if isinstance(home, str) else None, job, tuple(binds))
