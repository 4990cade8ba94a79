"""Cluster names, addresses and cluster.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.cluster import spec as specs
from launcher.errors import ClusterSpecError


def test_default_names_and_addresses(tmp_path: Path) -> None:
    node = specs.node_spec(tmp_path, specs.DEFAULT_LAYOUT, 3)
    assert (node.name, node.netns, node.host_veth, node.address) == (
        "node3",
        "beolaunch-node3",
        "beo3h",
        "10.77.0.13",
    )
    assert node.cache_dir == tmp_path / "cluster" / "node3" / "cache"
    assert str(specs.DEFAULT_LAYOUT.master_address()) == "10.77.0.1"


def test_layout_recognises_only_its_own_names() -> None:
    lay = specs.DEFAULT_LAYOUT
    assert lay.netns_index("beolaunch-node12") == 12
    assert lay.veth_index("beo4h") == 4
    for other in ("beolaunch-node", "beolaunch-node0", "beolaunch-nodex", "beotest1-node1"):
        assert lay.netns_index(other) is None
    for other in ("beo0", "beo4", "beotest4h", "beo4hx"):
        assert lay.veth_index(other) is None


@pytest.mark.parametrize(
    ("layout", "n", "words"),
    [
        (specs.Layout(veth_prefix="averylongprefix"), 2, "longer than 15"),
        (specs.Layout(subnet="10.77.0.0/25"), 2, "smaller than a /24"),
        (specs.Layout(subnet="nonsense"), 2, "not an IPv4 network"),
        (specs.DEFAULT_LAYOUT, 245, "between 0 and 244"),
        (specs.Layout(bridge="beo1h"), 1, "looks like a node's veth"),
    ],
)
def test_bad_layouts_are_refused(layout: specs.Layout, n: int, words: str) -> None:
    with pytest.raises(ClusterSpecError, match=words):
        layout.check(n)


def test_cluster_json_round_trip_and_corruption(tmp_path: Path) -> None:
    lay = specs.Layout(bridge="bt0", veth_prefix="bt", netns_prefix="t-node", subnet="10.78.9.0/24")
    spec = specs.ClusterSpec(
        layout=lay,
        nodes=[specs.node_spec(tmp_path, lay, i) for i in (1, 2)],
        cache_size="64M",
        master_argv=["m"],
        node_argv={"node1": ["a", "b"]},
    )
    assert specs.write(tmp_path, spec)
    assert not specs.write(tmp_path, spec)  # unchanged: not rewritten
    assert specs.read(tmp_path) == spec
    specs.spec_path(tmp_path).write_text("{")
    with pytest.raises(ClusterSpecError, match="cluster down"):
        specs.read(tmp_path)
    specs.spec_path(tmp_path).write_text('{"version": 1}')
    with pytest.raises(ClusterSpecError, match="not a cluster description"):
        specs.read(tmp_path)
    specs.spec_path(tmp_path).unlink()
    assert specs.read(tmp_path) is None
