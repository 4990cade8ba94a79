"""launcher.cluster.simagent: a simulated node answers as a real agent would."""

from __future__ import annotations

from cachefs.manifest import Entry, build
from launcher import wire
from launcher.cluster.simagent import SimAgent, SimCache, hardware

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def _prepare(job: int, *objects: tuple[str, int]) -> wire.Prepare:
    entries = [Entry(f"/f{i}", "file", 0o644, size, d) for i, (d, size) in enumerate(objects)]
    manifest = build("/f0", entries, owner=0)
    return wire.Prepare(job, manifest.document(), [], "token")


def test_a_second_fill_counts_what_the_first_left_as_hits() -> None:
    cache = SimCache()
    first = cache.fill(1, {DIGEST_A: 10})
    second = cache.fill(2, {DIGEST_A: 10, DIGEST_B: 5})
    assert (first.objects_hit, first.bytes_from_master) == (0, 10)
    assert (second.objects_total, second.objects_hit, second.bytes_from_master) == (2, 1, 5)
    cache.release(2)
    assert cache.document()["pinned"] == 1  # job 1 still pins A


def test_prepare_is_answered_with_a_fill_the_master_accepts() -> None:
    agent = SimAgent("ws://x/node", "sim0", "t", 0, 5.0)
    answers = agent.answer(_prepare(7, (DIGEST_A, 100), (DIGEST_B, 20)))
    prepared = answers[-1]
    assert isinstance(prepared, wire.Prepared) and prepared.accepted
    # what the master does with it: decode from the wire, then read the fill
    decoded = wire.decode(wire.encode(prepared), wire.NODE_TO_MASTER)
    assert isinstance(decoded, wire.Prepared)
    assert wire.FillReport.from_wire(decoded.fill).bytes_from_master == 120
    assert agent.jobs == {7}


def test_a_bad_manifest_is_refused() -> None:
    agent = SimAgent("ws://x/node", "sim0", "t", 0, 5.0)
    [answer] = agent.answer(wire.Prepare(1, {"nonsense": True}, [], "token"))
    assert isinstance(answer, wire.Prepared) and not answer.accepted


def test_every_task_exits_zero_and_release_forgets_the_job() -> None:
    agent = SimAgent("ws://x/node", "sim0", "t", 0, 5.0)
    agent.answer(_prepare(3, (DIGEST_A, 1)))
    exited = agent.answer(wire.Exec(3, [{"task": 4}, {"task": 5}]))
    assert [(e.task, e.status) for e in exited if isinstance(e, wire.Exited)] == [(4, 0), (5, 0)]
    assert agent.answer(wire.Release(3)) == []
    assert agent.jobs == set() and agent.cache.document()["pinned"] == 0


def test_hardware_reports_differ_by_node() -> None:
    assert hardware("sim1", 1)["nics"][0]["mac"] != hardware("sim2", 2)["nics"][0]["mac"]
