"""launcher.cluster.simagent: a simulated node answers as a real agent would."""

from __future__ import annotations

import asyncio

from cachefs.manifest import Entry, build
from launcher import wire
from launcher.cluster.simagent import SimAgent, SimCache, hardware
from launcher.cluster.simfill import SimPeers

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def _prepare(job: int, *objects: tuple[str, int], sources: list[dict[str, str]]) -> wire.Prepare:
    entries = [Entry(f"/f{i}", "file", 0o644, size, d) for i, (d, size) in enumerate(objects)]
    manifest = build("/f0", entries, owner=0)
    return wire.Prepare(job, manifest.document(), sources, "token")


def _peer(port: int) -> dict[str, str]:
    return {"url": f"http://127.0.0.1:{port}", "kind": "peer"}


def test_a_node_fills_from_a_peer_and_answers_a_fill_the_master_accepts() -> None:
    peers = SimPeers(join_wait_s=0.1)
    parent = SimAgent("ws://x/node", "sim0", "t", 0, 5.0, peer_port=20000, peers=peers)
    child = SimAgent("ws://x/node", "sim1", "t", 1, 5.0, peer_port=20001, peers=peers)
    parent.cache.objects.update({DIGEST_A: 100, DIGEST_B: 20})
    parent.peer.started.add(7)  # the parent's own fill for job 7 has begun
    answers = asyncio.run(
        child.prepare(_prepare(7, (DIGEST_A, 100), (DIGEST_B, 20), sources=[_peer(20000)]))
    )
    prepared = answers[-1]
    assert isinstance(prepared, wire.Prepared) and prepared.accepted
    # what the master does with it: decode from the wire, then read the fill
    decoded = wire.decode(wire.encode(prepared), wire.NODE_TO_MASTER)
    assert isinstance(decoded, wire.Prepared)
    fill = wire.FillReport.from_wire(decoded.fill)
    assert (fill.bytes_from_peers, fill.bytes_from_master) == (120, 0)
    assert child.jobs == {7} and set(child.cache.objects) == {DIGEST_A, DIGEST_B}
    assert child.fills[0].sources == ["peer"]


def test_a_fill_with_no_source_holding_an_object_is_refused() -> None:
    peers = SimPeers(join_wait_s=0.1)
    parent = SimAgent("ws://x/node", "sim0", "t", 0, 5.0, peer_port=20000, peers=peers)
    child = SimAgent("ws://x/node", "sim1", "t", 1, 5.0, peer_port=20001, peers=peers)
    parent.peer.started.add(7)  # started, holds nothing, expects nothing: "not here"
    [answer] = asyncio.run(child.prepare(_prepare(7, (DIGEST_A, 1), sources=[_peer(20000)])))
    assert isinstance(answer, wire.Prepared) and not answer.accepted
    assert answer.reason is not None and DIGEST_A in answer.reason


def test_a_bad_manifest_is_refused() -> None:
    agent = SimAgent("ws://x/node", "sim0", "t", 0, 5.0)
    [answer] = asyncio.run(agent.prepare(wire.Prepare(1, {"nonsense": True}, [], "token")))
    assert isinstance(answer, wire.Prepared) and not answer.accepted


def test_every_task_exits_zero_and_release_forgets_the_job() -> None:
    agent = SimAgent("ws://x/node", "sim0", "t", 0, 5.0)
    agent.cache.objects[DIGEST_A] = 1  # held: the fill needs no source
    asyncio.run(agent.prepare(_prepare(3, (DIGEST_A, 1), sources=[])))
    exited = agent.answer(wire.Exec(3, [{"task": 4}, {"task": 5}]))
    assert [(e.task, e.status) for e in exited if isinstance(e, wire.Exited)] == [(4, 0), (5, 0)]
    assert agent.answer(wire.Release(3)) == []
    assert agent.jobs == set() and agent.cache.document()["pinned"] == 0


def test_a_cache_counts_pins_per_job() -> None:
    cache = SimCache()
    cache.objects.update({DIGEST_A: 10, DIGEST_B: 5})
    cache.pin(1, {DIGEST_A: 10})
    cache.pin(2, {DIGEST_A: 10, DIGEST_B: 5})
    cache.release(2)
    assert cache.document()["pinned"] == 1  # job 1 still pins A


def test_hardware_reports_differ_by_node() -> None:
    assert hardware("sim1", 1)["nics"][0]["mac"] != hardware("sim2", 2)["nics"][0]["mac"]
