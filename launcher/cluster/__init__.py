"""The virtual cluster: N nodes on this machine, each a network and UTS namespace.

``up`` builds bridge, namespaces, veths, tmpfs caches and starts the master and
node agents; ``down`` removes all of it, including leftovers of a crashed run;
``run_in_node`` runs a command on a node. See docs/execution.md, "Virtual cluster".
"""

from launcher.cluster.lifecycle import DownReport, NodeCommand, NodeStatus, down, status, up
from launcher.cluster.nodeexec import node_argv, popen_in_node, run_in_node
from launcher.cluster.spec import DEFAULT_LAYOUT, ClusterSpec, Layout, NodeSpec

__all__ = [
    "DEFAULT_LAYOUT",
    "ClusterSpec",
    "DownReport",
    "Layout",
    "NodeCommand",
    "NodeSpec",
    "NodeStatus",
    "down",
    "node_argv",
    "popen_in_node",
    "run_in_node",
    "status",
    "up",
]
