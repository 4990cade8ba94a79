"""One-time boot tickets and accepting pending nodes, on a real database (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from bootsvc.settings import parse
from launcher.errors import BootTicketError, NodeAcceptError, StateError
from launcher.master.bootnodes import accept_node, next_free_name, pending_node
from launcher.master.boottickets import issue_ticket, redeem_ticket, ticket_digest
from launcher.master.tokens import node_for_token
from launcher.state import migrate
from launcher.state.base import utcnow
from launcher.state.db import make_engine, transaction
from launcher.state.models import Event, Node
from launcher.state.nodes import add_node, get_node

MAC = "52:54:00:12:34:56"
BOOT = parse(
    Path("config.toml"),
    {
        "boot": {
            "interface": "br-beo",
            "network": "10.77.0.0/24",
            "master_address": "10.77.0.1",
            "mode": "pool",
            "pool_first": "10.77.0.2",
            "pool_last": "10.77.0.99",
        }
    },
)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def _accepted(engine: Engine, name: str = "n1") -> None:
    with transaction(engine) as session:
        pending_node(session, MAC, "10.77.0.50")
        accept_node(session, MAC, name=name, boot=BOOT)


def test_issue_keeps_only_the_digest_and_an_expiry(engine: Engine) -> None:
    _accepted(engine)
    now = utcnow()
    with transaction(engine) as session:
        node = get_node(session, "n1")
        ticket = issue_ticket(session, node, ttl_s=900, now=now)
        assert node.boot_ticket_sha256 == ticket_digest(ticket) != ticket
        assert node.boot_ticket_expires == now + timedelta(seconds=900)
        assert len(ticket) >= 43  # 32 random bytes, base64url


def test_redeem_once_gives_a_working_token(engine: Engine) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        ticket = issue_ticket(session, get_node(session, "n1"), ttl_s=900)
    with transaction(engine) as session:
        enrolled = redeem_ticket(session, ticket)
    assert enrolled.name == "n1"
    with transaction(engine) as session:
        found = node_for_token(session, enrolled.token)
        assert found is not None and found.name == "n1"
        assert found.boot_ticket_sha256 is None and found.boot_ticket_expires is None
    with transaction(engine) as session, pytest.raises(BootTicketError, match="already used"):
        redeem_ticket(session, ticket)


def test_a_new_ticket_replaces_the_old_one(engine: Engine) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        old = issue_ticket(session, get_node(session, "n1"), ttl_s=900)
        new = issue_ticket(session, get_node(session, "n1"), ttl_s=900)
    with transaction(engine) as session, pytest.raises(BootTicketError):
        redeem_ticket(session, old)
    with transaction(engine) as session:
        assert redeem_ticket(session, new).name == "n1"


def test_an_expired_ticket_is_refused_and_cleared(engine: Engine) -> None:
    _accepted(engine)
    now = utcnow()
    with transaction(engine) as session:
        ticket = issue_ticket(session, get_node(session, "n1"), ttl_s=60, now=now)
    with transaction(engine) as session:
        with pytest.raises(BootTicketError, match="expired"):
            redeem_ticket(session, ticket, now=now + timedelta(seconds=61))
        node = get_node(session, "n1")
        assert (node.boot_ticket_sha256, node.token_sha256) == (None, None)


@pytest.mark.parametrize("ticket", ["", "not-the-ticket"])
def test_a_wrong_ticket_is_refused(engine: Engine, ticket: str) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        issue_ticket(session, get_node(session, "n1"), ttl_s=900)
    with transaction(engine) as session, pytest.raises(BootTicketError):
        redeem_ticket(session, ticket)
    with transaction(engine, readonly=True) as session:
        assert get_node(session, "n1").token_sha256 is None


def test_pending_then_accepted_with_a_static_address_outside_the_pool(engine: Engine) -> None:
    with transaction(engine) as session:
        first = pending_node(session, "52-54-00-12-34-56", "10.77.0.50")
        again = pending_node(session, MAC, "10.77.0.50")
        assert first.id == again.id and (first.state, first.name) == ("pending", None)
        node = accept_node(session, MAC, name=None, boot=BOOT)
        assert (node.name, node.address, node.state) == ("n1", "10.77.0.100", "down")
        events = session.scalars(select(Event.message).where(Event.node_id == node.id)).all()
        assert any("pending" in m for m in events) and any("accepted as n1" in m for m in events)
        pending_node(session, "52:54:00:12:34:57", "10.77.0.51")
        second = accept_node(session, "52:54:00:12:34:57", name="gpu1", boot=BOOT)
        assert (second.name, second.address) == ("gpu1", "10.77.0.101")
        assert next_free_name(session) == "n2"


def test_without_boot_settings_no_address(engine: Engine) -> None:
    with transaction(engine) as session:
        pending_node(session, MAC, "127.0.0.1")
        assert accept_node(session, MAC, name="n7", boot=None).address is None
        assert next_free_name(session) == "n8"


def test_accept_refuses_unknown_accepted_taken_and_bad_names(engine: Engine) -> None:
    with transaction(engine) as session:
        add_node(session, "n1")
        pending_node(session, MAC, "10.77.0.50")
        with pytest.raises(NodeAcceptError, match="no node has booted"):
            accept_node(session, "52:54:00:00:00:99", name=None, boot=BOOT)
        with pytest.raises(NodeAcceptError, match="name n1 is taken"):
            accept_node(session, MAC, name="n1", boot=BOOT)
        with pytest.raises(StateError, match="hostname label"):
            accept_node(session, MAC, name="Bad_Name", boot=BOOT)
        with pytest.raises(StateError, match="six hex pairs"):
            accept_node(session, "52:54", name=None, boot=BOOT)
        accept_node(session, MAC, name="n2", boot=BOOT)
        with pytest.raises(NodeAcceptError, match="already accepted as node n2"):
            accept_node(session, MAC, name="n3", boot=BOOT)
        assert session.scalars(select(Node).where(Node.name == "n3")).first() is None
