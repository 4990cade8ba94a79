"""Syslog datagrams: severity to level, the PRI stripped; written in bounded batches."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from sqlalchemy import Engine, select

from launcher.master.dbwork import DbWork
from launcher.master.logs import SyslogProtocol, parse
from launcher.state.db import transaction
from launcher.state.models import Event, Node
from launcher.state.nodes import add_node


@pytest.mark.parametrize(
    ("datagram", "level"),
    [
        (b"<11>kernel: oops", "error"),  # user.err
        (b"<12>disk slow", "warning"),  # user.warning
        (b"<14>started", "info"),  # user.info
        (b"<15>details", "debug"),  # user.debug
        (b"<0>panic", "error"),  # kern.emerg
    ],
)
def test_severity_picks_the_level(datagram: bytes, level: str) -> None:
    got_level, message = parse(datagram + b"\n")
    assert got_level == level
    assert not message.startswith("<") and not message.endswith("\n")


def test_a_line_without_pri_is_info_and_kept_whole() -> None:
    assert parse(b"no pri here") == ("info", "no pri here")
    assert parse(b"<999>too big") == ("info", "<999>too big")


def test_lines_are_written_in_one_batch_with_their_node(engine: Engine) -> None:
    with transaction(engine) as session:
        add_node(session, "n1").address = "10.0.0.5"

    async def main() -> SyslogProtocol:
        db = DbWork(engine)
        try:
            syslog = SyslogProtocol(db, bound=3)
            syslog.datagram_received(b"<12>disk slow", ("10.0.0.5", 514))
            syslog.datagram_received(b"<14>hello", ("10.0.0.9", 514))
            assert list(_events(engine)) == []  # nothing written until the flush
            await syslog.flush()
            return syslog
        finally:
            await db.close()

    syslog = asyncio.run(main())
    assert syslog.written == 2 and syslog.lost == 0
    assert _events(engine) == [
        ("warning", "disk slow", "n1"),
        ("info", "10.0.0.9: hello", None),
    ]


def test_lines_beyond_the_bound_are_dropped_and_counted(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> SyslogProtocol:
        db = DbWork(engine)
        try:
            syslog = SyslogProtocol(db, bound=2)
            for n in range(5):
                syslog.datagram_received(f"line {n}".encode(), ("10.0.0.9", 514))
            await syslog.flush()
            syslog.datagram_received(b"after", ("10.0.0.9", 514))  # room again
            await syslog.flush()
            return syslog
        finally:
            await db.close()

    syslog = asyncio.run(main())
    assert (syslog.written, syslog.lost) == (3, 3)
    assert [m for _l, m, _n in _events(engine)] == [
        "10.0.0.9: line 0",
        "10.0.0.9: line 1",
        "10.0.0.9: after",
    ]
    assert "dropped 3 log lines: 2 were waiting for the state database" in caplog.text


def test_a_failed_write_drops_the_batch_and_says_so(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> SyslogProtocol:
        db = DbWork(engine)
        try:
            syslog = SyslogProtocol(db)
            syslog.datagram_received(b"x", ("10.0.0.9", 514))
            syslog.pending[0] = replace(syslog.pending[0], level="nonsense")
            await syslog.flush()
            return syslog
        finally:
            await db.close()

    syslog = asyncio.run(main())
    assert (syslog.written, syslog.lost, syslog.pending) == (0, 1, [])
    assert "dropped 1 log lines (from 10.0.0.9...)" in caplog.text


def _events(engine: Engine) -> list[tuple[str, str, str | None]]:
    with transaction(engine, readonly=True) as session:
        rows = session.execute(
            select(Event.level, Event.message, Node.name)
            .outerjoin(Node, Node.id == Event.node_id)
            .where(Event.source == "syslog")
            .order_by(Event.id)
        )
        return [(level, message, name) for level, message, name in rows]
