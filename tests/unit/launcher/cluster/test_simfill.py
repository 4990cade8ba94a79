"""launcher.cluster.simfill: simulated nodes fill from their sources as real agents do."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence

from cachefs.source import Incoming, ObjectSource
from launcher.cluster.simfill import PeerSource, SimFill, SimPeer, SimPeers

BLOBS = [bytes([i]) * (1000 + i) for i in range(6)]
WANTED = {hashlib.sha256(b).hexdigest(): len(b) for b in BLOBS}
DATA = {hashlib.sha256(b).hexdigest(): b for b in BLOBS}
CLOSURE = sum(WANTED.values())


class Master:
    """The master's object service, in memory: every object, with real bytes."""

    kind = "master"
    label = "master"

    async def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        for sha in wanted:

            async def chunks(blob: bytes = DATA[sha]) -> AsyncIterator[bytes]:
                yield blob

            yield Incoming(sha, len(DATA[sha]), chunks())


def _tree(
    names: str, parents: dict[str, str], on_installed: Callable[[str, str], None] | None = None
) -> tuple[dict[str, SimPeer], dict[str, SimFill], dict[str, list[ObjectSource]]]:
    """Nodes ``names``, each with [parent, grandparent, master] as the master gives them."""
    peers = SimPeers(join_wait_s=0.2)
    nodes = {n: SimPeer(n, 20000 + i, {}) for i, n in enumerate(names)}
    for node in nodes.values():
        peers.add(node)
    master = Master()

    def peer(name: str) -> PeerSource:
        return PeerSource(f"http://127.0.0.1:{nodes[name].port}", 1, peers, WANTED)

    sources: dict[str, list[ObjectSource]] = {}
    fills: dict[str, SimFill] = {}
    for n in names:
        ancestors = []
        up = parents.get(n)
        while up is not None and len(ancestors) < 2:
            ancestors.append(peer(up))
            up = parents.get(up)
        sources[n] = [*ancestors, master]

        def installed(sha: str, name: str = n) -> None:
            if on_installed is not None:
                on_installed(name, sha)

        fills[n] = SimFill(nodes[n], 1, 0.01, on_installed=installed)
    return nodes, fills, sources


async def _run(
    names: str, parents: dict[str, str], kill: str | None = None
) -> tuple[dict[str, SimFill], dict[str, asyncio.Task[None]]]:
    tasks: dict[str, asyncio.Task[None]] = {}

    def maybe_kill(name: str, _sha: str) -> None:
        if name == kill and not nodes[name].dead:
            nodes[name].kill()
            tasks[name].cancel()

    nodes, fills, sources = _tree(names, parents, maybe_kill)
    for n in names:
        tasks[n] = asyncio.create_task(fills[n].run(WANTED, sources[n]))
    await asyncio.wait(tasks.values(), timeout=10)
    return fills, tasks


def test_the_master_sends_the_closure_once_down_a_tree() -> None:
    parents = {"b": "a", "c": "a", "d": "b", "e": "b"}
    fills, tasks = asyncio.run(_run("abcde", parents))
    assert all(t.done() and t.exception() is None for t in tasks.values())
    assert sum(f.bytes_from["master"] for f in fills.values()) == CLOSURE
    assert [fills[n].bytes_from["peer"] for n in "bcde"] == [CLOSURE] * 4


def test_children_of_a_parent_killed_mid_fill_go_on_from_their_grandparent() -> None:
    parents = {"b": "a", "c": "b", "d": "b"}
    fills, tasks = asyncio.run(_run("abcd", parents, kill="b"))
    assert tasks["b"].cancelled()
    for child in "cd":
        assert tasks[child].done() and tasks[child].exception() is None
        assert (fills[child].bytes_from["master"], fills[child].bytes_from["peer"]) == (0, CLOSURE)
    assert fills["a"].bytes_from["master"] == CLOSURE


def test_a_peer_whose_fill_never_starts_refuses_and_the_master_serves() -> None:
    peers = SimPeers(join_wait_s=0.05)
    idle, node = SimPeer("idle", 20000, {}), SimPeer("n", 20001, {})
    peers.add(idle)
    peers.add(node)
    fill = SimFill(node, 1)
    source = PeerSource("http://127.0.0.1:20000", 1, peers)
    asyncio.run(fill.run(WANTED, [source, Master()]))
    assert fill.bytes_from == {"master": CLOSURE, "peer": 0}


def test_a_peer_port_no_simulated_node_has_is_unreachable() -> None:
    node = SimPeer("n", 20001, {})
    fill = SimFill(node, 1)
    source = PeerSource("http://127.0.0.1:29999", 1, SimPeers())
    asyncio.run(fill.run(WANTED, [source, Master()]))
    assert fill.bytes_from["master"] == CLOSURE and set(node.objects) == set(WANTED)
