"""Peer fills on the Slurm path: each admitted node's sources from the job's node list."""

from __future__ import annotations

from unittest import mock

from launcher.master.admission import slurm_sources
from launcher.master.links import NodeLink
from launcher.wire import NODE_TO_MASTER, Admit, decode, encode

MASTER = {"url": "http://10.0.0.1:4871", "kind": "master"}
NODES = ["node1", "node2", "node3", "node4"]


def link(name: str, address: str, peer_port: int | None = 4874) -> NodeLink:
    return NodeLink(name, 1, "10.0.0.1", address, mock.Mock(), peer_port=peer_port)


def master(_link: NodeLink) -> list[dict[str, str]]:
    return [dict(MASTER)]


def links(*without_peers: str) -> dict[str, NodeLink]:
    return {
        name: link(name, f"10.0.0.{11 + i}", None if name in without_peers else 4874)
        for i, name in enumerate(NODES)
    }


def test_each_node_of_a_slurm_job_fills_from_its_parent_grandparent_then_the_master() -> None:
    found = {n: slurm_sources(n, list(reversed(NODES)), links(), master, 2) for n in NODES}
    # the tree over the sorted list: node1 root; node2, node3 its children; node4 node2's
    assert found == {
        "node1": [MASTER],
        "node2": [{"url": "http://10.0.0.11:4874", "kind": "peer"}, MASTER],
        "node3": [{"url": "http://10.0.0.11:4874", "kind": "peer"}, MASTER],
        "node4": [
            {"url": "http://10.0.0.12:4874", "kind": "peer"},
            {"url": "http://10.0.0.11:4874", "kind": "peer"},
            MASTER,
        ],
    }


def test_the_tree_does_not_change_with_who_is_connected() -> None:
    # node1 gone: node2 stays its child (the master only), node4 still node2's child
    present = {k: v for k, v in links().items() if k != "node1"}
    assert slurm_sources("node2", NODES, present, master, 2) == [MASTER]
    # node4's grandparent node1 is not connected: its parent, then the master
    assert slurm_sources("node4", NODES, present, master, 2) == [
        {"url": "http://10.0.0.12:4874", "kind": "peer"},
        MASTER,
    ]


def test_a_parent_without_a_peer_service_or_no_node_list_leaves_the_master() -> None:
    # node2 serves no peers: node4 goes to its grandparent, then the master
    assert slurm_sources("node4", NODES, links("node2"), master, 2) == [
        {"url": "http://10.0.0.11:4874", "kind": "peer"},
        MASTER,
    ]
    assert slurm_sources("node4", NODES, links("node1", "node2"), master, 2) == [MASTER]
    assert slurm_sources("node4", None, links(), master, 2) == [MASTER]
    assert slurm_sources("node4", ["node1", "node2"], links(), master, 2) == [MASTER]


def test_an_admit_without_a_node_list_is_still_valid() -> None:
    old = Admit(7, "d" * 64, 1000, 100, "ann", None)
    text = encode(old).replace(',"nodes":null', "")
    assert '"nodes"' not in text
    assert decode(text, NODE_TO_MASTER) == old
    new = Admit(7, "d" * 64, 1000, 100, "ann", None, ["node1", "node2"])
    assert decode(encode(new), NODE_TO_MASTER) == new
