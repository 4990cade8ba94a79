"""The agent's outbox: held exits survive in the state file; output is never held."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from launcher import wire
from launcher.errors import AgentStateError
from launcher.node.outbox import Outbox, load_held, save_held


def test_exits_are_held_and_persisted_while_disconnected_output_is_not(tmp_path: Path) -> None:
    state = tmp_path / "state" / "agent.json"

    async def scenario() -> None:
        outbox = Outbox(state)
        assert not await outbox.send(wire.Output.of(1, 0, "stdout", b"lost"))
        assert not await outbox.send(wire.Exited(1, 0, 143, 15, {"utime": 0.1}))

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
