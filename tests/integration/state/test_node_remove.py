"""Removing a node: a node that ran jobs or may be connected stays; anything else
goes with its assignments and cache rows, its log lines kept (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from launcher.errors import NodeRemoveError, NotFoundError
from launcher.master.bootnodes import pending_node
from launcher.state.bootimages import store_image
from launcher.state.db import transaction
from launcher.state.models import BootAssignment, CacheEntry, Event, Node
from launcher.state.nodes import add_node, find_node, remove_node
from launcher.state.record import record_cached, record_event
from tests.integration.state.populate import LIBC, populate


def _count(engine: Engine, model: type, **where: object) -> int:
    with transaction(engine, readonly=True) as s:
        stmt = select(func.count()).select_from(model).filter_by(**where)
        return int(s.scalar(stmt) or 0)


def test_a_node_that_ran_jobs_or_is_up_is_kept(engine: Engine) -> None:
    with transaction(engine) as s:
        populate(s)
        add_node(s, "n9", state="busy")
    for name, message in (
        ("n1", r"node n1: took part in 1 job\(s\), which accounting keeps; 'beoctl node drain n1"),
        ("n3", r"node n3: took part in 2 job\(s\)"),
        ("n9", "node n9: is busy: stop its agent or power it off first"),
    ):
        with pytest.raises(NodeRemoveError, match=message), transaction(engine) as s:
            remove_node(s, find_node(s, name))
    assert _count(engine, Node) == 4


def test_remove_takes_assignments_and_cache_rows_and_keeps_log_lines(
    engine: Engine, tmp_path: Path
) -> None:
    with transaction(engine) as s:
        populate(s)
        spare = add_node(s, "n4", mac="52:54:00:00:00:04")
        record_cached(s, spare, [LIBC])
        image = store_image(s, tmp_path / "state", b"k", kind="kernel", name="k", built_from={})
        s.add(BootAssignment(node_id=spare.id, kind="kernel", image_id=image.id))
        record_event(s, "node n4 booting", node=spare)
        spare_id = spare.id
    with transaction(engine) as s:
        remove_node(s, find_node(s, "52-54-00-00-00-04"))  # by MAC too
    assert _count(engine, Node, name="n4") == 0
    assert _count(engine, BootAssignment, node_id=spare_id) == 0
    assert _count(engine, CacheEntry, node_id=spare_id) == 0
    assert _count(engine, CacheEntry) > 0  # the other nodes' rows are untouched
    with transaction(engine, readonly=True) as s:
        kept = s.scalars(select(Event).where(Event.message == "node n4 booting")).one()
        assert kept.node_id is None


def test_a_pending_mac_is_removed_by_mac_and_comes_back_pending(engine: Engine) -> None:
    mac = "52:54:00:aa:bb:cc"
    with transaction(engine) as s:
        pending_node(s, mac, "10.7.0.200")
    with transaction(engine) as s:
        remove_node(s, find_node(s, mac.upper()))
    gone = "no node named '52:54:00:aa:bb:cc' or with that MAC"
    with pytest.raises(NotFoundError, match=gone), transaction(engine, readonly=True) as s:
        find_node(s, mac)
    with transaction(engine) as s:
        again = pending_node(s, mac, "10.7.0.200")
        assert (again.state, again.name) == ("pending", None)
