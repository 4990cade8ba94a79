"""The distribution tree: parents, ordering, and each node's sources."""

from __future__ import annotations

from unittest import mock

import pytest

from launcher.master.fanout import assign, order, parents
from launcher.master.links import NodeLink

MASTER = {"url": "http://10.0.0.1:4871", "kind": "master"}


def link(name: str, address: str, peer_port: int | None = 4874) -> NodeLink:
    return NodeLink(name, 1, "10.0.0.1", address, mock.Mock(), peer_port=peer_port)


def master(_link: NodeLink) -> list[dict[str, str]]:
    return [dict(MASTER)]


def test_parents_fill_the_tree_breadth_first() -> None:
    nodes = [f"n{i}" for i in range(8)]
    tree = parents(nodes, 2)
    assert tree == {
        "n0": None,
        "n1": "n0",
        "n2": "n0",
        "n3": "n1",
        "n4": "n1",
        "n5": "n2",
        "n6": "n2",
        "n7": "n3",
    }


def test_a_fanout_as_wide_as_the_job_is_a_star_and_one_is_a_chain() -> None:
    nodes = ["a", "b", "c", "d"]
    assert parents(nodes, 3) == {"a": None, "b": "a", "c": "a", "d": "a"}
    assert parents(nodes, 1) == {"a": None, "b": "a", "c": "b", "d": "c"}


def test_a_fanout_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="fanout"):
        parents(["a"], 0)


def test_order_puts_servers_first_then_holders_then_as_given() -> None:
    nodes = ["a", "b", "c", "d"]
    serves = {"a": False, "b": True, "c": True, "d": True}
    assert order(nodes, serves.__getitem__, {"d": 5, "c": 1}) == ["d", "c", "b", "a"]


def test_the_root_fetches_from_the_master_and_the_others_from_their_ancestors_first() -> None:
    links = {n: link(n, f"10.0.0.{i + 10}") for i, n in enumerate(["a", "b", "c", "d"])}
    sources = assign(["a", "b", "c", "d"], links, master, fanout=2)
    assert sources["a"] == [MASTER]
    assert sources["b"] == [{"url": "http://10.0.0.10:4874", "kind": "peer"}, MASTER]
    assert sources["c"] == [{"url": "http://10.0.0.10:4874", "kind": "peer"}, MASTER]
    # d's parent is b; its grandparent a serves d if b is lost mid-fill
    assert sources["d"] == [
        {"url": "http://10.0.0.11:4874", "kind": "peer"},
        {"url": "http://10.0.0.10:4874", "kind": "peer"},
        MASTER,
    ]


def test_a_deep_node_lists_its_parent_and_grandparent_only() -> None:
    names = [f"n{i}" for i in range(8)]
    links = {n: link(n, f"10.0.0.{i + 10}") for i, n in enumerate(names)}
    sources = assign(names, links, master, fanout=1)  # a chain n0 -> n1 -> ... -> n7
    assert [s.get("url") for s in sources["n7"]] == [
        "http://10.0.0.16:4874",
        "http://10.0.0.15:4874",
        MASTER["url"],
    ]


def test_a_node_holding_the_objects_becomes_the_root() -> None:
    links = {n: link(n, f"10.0.0.{i + 10}") for i, n in enumerate(["a", "b", "c"])}
    sources = assign(["a", "b", "c"], links, master, fanout=2, held={"c": 3})
    assert sources["c"] == [MASTER]
    assert sources["a"][0]["url"] == "http://10.0.0.12:4874"


def test_nodes_without_a_peer_service_are_leaves_and_their_children_use_the_master() -> None:
    links = {
        "a": link("a", "10.0.0.10", peer_port=None),
        "b": link("b", "10.0.0.11"),
        "c": link("c", "fd00::c"),
    }
    sources = assign(["a", "b", "c"], links, master, fanout=1)
    # order: b, c, a (a serves nobody); chain b -> c -> a
    assert sources["b"] == [MASTER]
    assert sources["c"] == [{"url": "http://10.0.0.11:4874", "kind": "peer"}, MASTER]
    assert sources["a"] == [
        {"url": "http://[fd00::c]:4874", "kind": "peer"},
        {"url": "http://10.0.0.11:4874", "kind": "peer"},
        MASTER,
    ]
