"""Running a command on a virtual node: inside its network and UTS namespaces.

Used by the cluster's lifecycle (node agents) and its Slurm daemons (slurmd),
so neither needs the other to start a process on a node.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

from launcher.cluster.spec import NodeSpec


def node_argv(node: NodeSpec, argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run in ``node``'s network and UTS namespaces.

    ``nsenter`` rather than ``ip netns exec``: the latter also makes a mount
    namespace and remounts /sys, hiding /sys/fs/cgroup from the process.
    """
    return ["nsenter", f"--net={node.netns_path}", f"--uts={node.uts_file}", "--", *argv]


def run_in_node(
    node: NodeSpec, argv: Sequence[str], **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, **kwargs)`` inside ``node``'s namespaces."""
    return subprocess.run(node_argv(node, argv), **kwargs)


def popen_in_node(node: NodeSpec, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **kwargs)`` inside ``node``'s namespaces."""
    return subprocess.Popen(node_argv(node, argv), **kwargs)
