"""The master daemon when a part fails to start: the parts started before it are
stopped again (their sockets released, no user socket or pid file left)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from launcher import config as cfg
from launcher.initialize import initialize
from launcher.isolation import free_ports
from launcher.master.daemon import serve
from launcher.master.paths import pid_path, socket_path


@pytest.fixture
def config(tmp_path: Path) -> Iterator[cfg.Config]:
    state = tmp_path / "state"
    initialize(state)
    doc = cfg.render(cfg.load(str(state / cfg.CONFIG_NAME)))
    for name in cfg.SERVICES:
        kind = socket.SOCK_DGRAM if name in ("logs", "tftp") else socket.SOCK_STREAM
        doc["services"][name] = {"address": "127.0.0.1", "port": free_ports([kind])[0]}
    (state / cfg.CONFIG_NAME).write_text(tomli_w.dumps(doc))
    yield cfg.load(str(state / cfg.CONFIG_NAME))


def _bindable(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _held(config: cfg.Config) -> list[str]:
    """What of the master is still there: ports bound, files, tasks (other than this one)."""
    found = [
        f"the {name} port"
        for name, kind in (
            ("objects", socket.SOCK_STREAM),
            ("control", socket.SOCK_STREAM),
            ("logs", socket.SOCK_DGRAM),
        )
        if not _bindable(config.service(name).port, kind)
    ]
    found += [str(p) for p in (socket_path(config), pid_path(config)) if p.exists()]
    found += [repr(t) for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    return found


def test_a_taken_port_stops_the_parts_started_before_it(config: cfg.Config) -> None:
    """The logs port is taken: the objects and control services, started
    before the syslog listener, are closed again, and no task is left."""
    logs = config.service("logs")
    held: list[str] = []

    async def run() -> None:
        with pytest.raises(OSError, match="in use"):
            await serve(config, ready=lambda: pytest.fail("the master came up"))
        held.extend(_held(config))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((logs.address, logs.port))
        asyncio.run(run())
    assert held == ["the logs port"]  # ours, in the test: nothing else


def test_a_failure_once_up_stops_everything_and_removes_the_run_files(
    config: cfg.Config,
) -> None:
    """Everything started (the pid file written, the user socket bound), then
    the last step fails: all of it is undone."""
    up: list[bool] = []
    held: list[str] = []

    def ready() -> None:
        up.append(socket_path(config).exists() and pid_path(config).exists())
        raise RuntimeError("the ready callback failed")

    async def run() -> None:
        with pytest.raises(RuntimeError, match="the ready callback failed"):
            await serve(config, ready=ready)
        held.extend(_held(config))

    asyncio.run(run())
    assert up == [True]
    assert held == []
