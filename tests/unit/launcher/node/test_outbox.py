"""The agent's outbox: held exits survive in the state file; output is held in memory,
bounded, and reaches the master before the exits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from launcher import wire
from launcher.errors import AgentStateError
from launcher.node.outbox import Outbox, load_held, save_held


def test_exits_are_held_and_persisted_while_disconnected_output_in_memory(tmp_path: Path) -> None:
    state = tmp_path / "state" / "agent.json"

    async def scenario() -> None:
        outbox = Outbox(state)
        assert not await outbox.send(wire.Output.of(1, 0, "stdout", b"kept"))
        assert not await outbox.send(wire.Exited(1, 0, 143, 15, {"utime": 0.1}))
        assert [m.payload() for m in outbox.output] == [b"kept"]

    asyncio.run(scenario())
    held = load_held(state)
    assert held == [
        {
            "v": 1,
            "type": "exited",
            "job": 1,
            "task": 0,
            "status": 143,
            "signal": 15,
            "rusage": {"utime": 0.1},
            "node": None,
        }
    ]
    assert Outbox(state).held == held  # a new agent starts with them
    assert [p.name for p in state.parent.iterdir()] == ["agent.json"]  # no temp file left


def test_a_missing_state_file_holds_nothing(tmp_path: Path) -> None:
    assert load_held(tmp_path / "none.json") == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"version": 2, "held": []}', "version 1"),
        ('{"version": 1, "held": {}}', "'held' is not a list"),
        ('{"version": 1, "held": [{"v": 1, "type": "output"}]}', "malformed"),
        ('{"version": 1, "held": [{"v": 1, "type": "exited", "job": 1}]}', "malformed"),
    ],
)
def test_a_damaged_state_file_is_named(tmp_path: Path, text: str, problem: str) -> None:
    state = tmp_path / "agent.json"
    state.write_text(text)
    with pytest.raises(AgentStateError, match=problem) as caught:
        load_held(state)
    assert caught.value.path == state


def test_save_replaces_the_whole_file(tmp_path: Path) -> None:
    state = tmp_path / "agent.json"
    doc = json.loads(wire.encode(wire.Exited(2, 1, 0)))
    save_held(state, [doc, doc])
    save_held(state, [doc])
    assert load_held(state) == [doc]


class FakeSocket:
    """What Outbox uses of a client WebSocket: ``send_str`` and ``closed``;
    with ``fail_after``, the writes after that many raise ConnectionError."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[wire.Message] = []
        self.closed = False
        self.fail_after = fail_after

    async def send_str(self, data: str) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("gone")
        self.sent.append(wire.decode(data, wire.NODE_TO_MASTER))


def _hello(held: list[dict[str, Any]]) -> wire.Hello:
    return wire.Hello("node7", {}, {}, held)


def _brief(sent: list[wire.Message]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for m in sent:
        if isinstance(m, wire.Hello):
            out.append(("hello", len(m.held)))
        elif isinstance(m, wire.Output):
            out.append(("output", m.task, m.stream, m.payload()))
        elif isinstance(m, wire.Exited):
            out.append(("exited", m.task, m.status))
    return out


def test_held_output_goes_before_the_exits_that_may_end_the_job(tmp_path: Path) -> None:
    state = tmp_path / "agent.json"

    async def scenario() -> list[wire.Message]:
        outbox = Outbox(state)
        await outbox.send(wire.Output.of(1, 0, "stdout", b"during\n"))
        await outbox.send(wire.Exited(1, 0, 4))
        await outbox.send(wire.Output.of(1, 1, "stderr", b"late\n"))
        await outbox.send(wire.Exited(1, 1, 0))
        ws = FakeSocket()
        await outbox.attach(ws, _hello)  # type: ignore[arg-type]
        assert outbox.connected and outbox.output == [] and outbox.held == []
        return ws.sent

    sent = asyncio.run(scenario())
    assert _brief(sent) == [
        ("hello", 0),
        ("output", 0, "stdout", b"during\n"),
        ("output", 1, "stderr", b"late\n"),
        ("exited", 0, 4),
        ("exited", 1, 0),
    ]
    assert load_held(state) == []


def test_with_no_output_held_the_exits_go_in_the_hello(tmp_path: Path) -> None:
    async def scenario() -> list[wire.Message]:
        outbox = Outbox(tmp_path / "agent.json")
        await outbox.send(wire.Exited(2, 0, 0))
        ws = FakeSocket()
        await outbox.attach(ws, _hello)  # type: ignore[arg-type]
        return ws.sent

    assert _brief(asyncio.run(scenario())) == [("hello", 1)]


def test_output_past_the_budget_is_dropped_counted_and_noted(tmp_path: Path) -> None:
    async def scenario() -> list[wire.Message]:
        outbox = Outbox(tmp_path / "agent.json", output_budget=10)
        await outbox.send(wire.Output.of(3, 0, "stdout", b"123456"))
        await outbox.send(wire.Output.of(3, 0, "stdout", b"789abc"))  # over: dropped
        await outbox.send(wire.Output.of(3, 1, "stdout", b"xyz"))  # fits: held
        await outbox.send(wire.Output.of(3, 0, "stdout", b"d"))  # task 0 dropped already
        assert outbox.dropped == {(3, 0): 7}
        ws = FakeSocket()
        await outbox.attach(ws, _hello)  # type: ignore[arg-type]
        assert outbox.dropped == {} and outbox.output == []
        return ws.sent

    assert _brief(asyncio.run(scenario())) == [
        ("hello", 0),
        ("output", 0, "stdout", b"123456"),
        ("output", 1, "stdout", b"xyz"),
        (
            "output",
            0,
            "stderr",
            b"beolaunch: 7 bytes of output dropped while the master was away\n",
        ),
    ]


def test_a_connection_lost_during_the_replay_keeps_what_was_not_written(tmp_path: Path) -> None:
    state = tmp_path / "agent.json"

    async def scenario() -> list[wire.Message]:
        outbox = Outbox(state)
        for part in (b"a", b"b", b"c"):
            await outbox.send(wire.Output.of(4, 0, "stdout", part))
        await outbox.send(wire.Exited(4, 0, 0))
        with pytest.raises(ConnectionError):
            await outbox.attach(FakeSocket(fail_after=2), _hello)  # type: ignore[arg-type]
        assert not outbox.connected
        ws = FakeSocket()
        await outbox.attach(ws, _hello)  # type: ignore[arg-type]
        return ws.sent

    # hello and "a" were written to the first socket; the rest goes to the next.
    assert _brief(asyncio.run(scenario())) == [
        ("hello", 0),
        ("output", 0, "stdout", b"b"),
        ("output", 0, "stdout", b"c"),
        ("exited", 0, 0),
    ]
    assert load_held(state) == []


def test_a_sent_exit_goes_again_with_every_hello_until_its_job_is_released(
    tmp_path: Path,
) -> None:
    # Issue 12: a master that stops before it recorded an exit (its database was
    # away) forgets it; the exit must come again, or the job waits forever.
    state = tmp_path / "agent.json"

    async def scenario() -> None:
        outbox = Outbox(state)
        first = FakeSocket()
        await outbox.attach(first, _hello)  # type: ignore[arg-type]
        assert await outbox.send(wire.Exited(3, 0, 0))
        assert await outbox.send(wire.Exited(4, 0, 7))
        outbox.detach()
        again = FakeSocket()
        await Outbox(state).attach(again, _hello)  # type: ignore[arg-type]  # a restarted agent too
        hello = again.sent[0]
        assert isinstance(hello, wire.Hello)
        assert sorted((d["job"], d["status"]) for d in hello.held) == [(3, 0), (4, 7)]
        outbox.forget(3)  # released by the master
        later = FakeSocket()
        await outbox.attach(later, _hello)  # type: ignore[arg-type]
        hello = later.sent[0]
        assert isinstance(hello, wire.Hello)
        assert [(d["job"], d["status"]) for d in hello.held] == [(4, 7)]

    asyncio.run(scenario())
    assert load_held(state) == []  # nothing is waiting to be sent for the first time
