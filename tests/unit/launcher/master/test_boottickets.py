"""One-time boot tickets and accepting pending nodes, on a real database (SQLite, PostgreSQL).

Who gets a ticket and who may redeem it (issue 12, item 3): only an accepted node
that is not connected, asking from its own address; redeemed only from a
privileged source port and that address, spent when used.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bootsvc.settings import parse
from launcher.errors import BootTicketError, NodeAcceptError, StateError, TooManyPendingError
from launcher.master.bootnodes import accept_node, next_free_name, pending_node
from launcher.master.boottickets import (
    Enrolled,
    issue_ticket,
    redeem_ticket,
    same_address,
    ticket_digest,
    ticket_refusal,
)
from launcher.master.tokens import node_for_token
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.models import Event, Node
from launcher.state.nodes import add_node, get_node

MAC = "52:54:00:12:34:56"
#: The static address n1 gets at accept (the first outside BOOT's pool).
ADDRESS = "10.77.0.100"
BOOT = parse(
    {
        "interface": "br-beo",
        "network": "10.77.0.0/24",
        "master_address": "10.77.0.1",
        "mode": "pool",
        "pool_first": "10.77.0.2",
        "pool_last": "10.77.0.99",
    }
)


def _accepted(engine: Engine, name: str = "n1") -> None:
    with transaction(engine) as session:
        pending_node(session, MAC, "10.77.0.50")
        assert accept_node(session, MAC, name=name, boot=BOOT).address == ADDRESS


def _nobody_connected(_name: str) -> bool:
    return False


def redeem(
    session: Session,
    ticket: str,
    *,
    client: str = ADDRESS,
    port: int = 700,
    connected: Callable[[str], bool] = _nobody_connected,
    now: datetime | None = None,
) -> Enrolled:
    """redeem_ticket as the node itself: its address, a privileged port, not connected."""
    return redeem_ticket(session, ticket, client=client, port=port, connected=connected, now=now)


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
        enrolled = redeem(session, ticket)
    assert enrolled.name == "n1"
    with transaction(engine) as session:
        found = node_for_token(session, enrolled.token)
        assert found is not None and found.name == "n1"
        assert found.boot_ticket_sha256 is None and found.boot_ticket_expires is None
    with transaction(engine) as session, pytest.raises(BootTicketError, match="already used"):
        redeem(session, ticket)


def test_a_new_ticket_replaces_the_old_one(engine: Engine) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        old = issue_ticket(session, get_node(session, "n1"), ttl_s=900)
        new = issue_ticket(session, get_node(session, "n1"), ttl_s=900)
    with transaction(engine) as session, pytest.raises(BootTicketError):
        redeem(session, old)
    with transaction(engine) as session:
        assert redeem(session, new).name == "n1"


def test_an_expired_ticket_is_refused_and_cleared(engine: Engine) -> None:
    _accepted(engine)
    now = utcnow()
    with transaction(engine) as session:
        ticket = issue_ticket(session, get_node(session, "n1"), ttl_s=60, now=now)
    with transaction(engine) as session:
        with pytest.raises(BootTicketError, match="expired"):
            redeem(session, ticket, now=now + timedelta(seconds=61))
        node = get_node(session, "n1")
        assert (node.boot_ticket_sha256, node.token_sha256) == (None, None)


@pytest.mark.parametrize("ticket", ["", "not-the-ticket"])
def test_a_wrong_ticket_is_refused(engine: Engine, ticket: str) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        issue_ticket(session, get_node(session, "n1"), ttl_s=900)
    with transaction(engine) as session, pytest.raises(BootTicketError):
        redeem(session, ticket)
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


def test_a_ticket_only_for_a_node_not_connected_asking_from_its_own_address(
    engine: Engine,
) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        node = get_node(session, "n1")
        assert ticket_refusal(node, ADDRESS, connected=False) is None
        assert ticket_refusal(node, f"::ffff:{ADDRESS}", connected=False) is None
        connected = ticket_refusal(node, ADDRESS, connected=True)
        assert connected is not None and "node n1 is connected" in connected
        elsewhere = ticket_refusal(node, "10.77.0.101", connected=False)
        assert elsewhere is not None and f"from 10.77.0.101, not from its address {ADDRESS}" in (
            elsewhere
        )
        node.address = None
        missing = ticket_refusal(node, ADDRESS, connected=False)
        assert missing is not None and "no address recorded" in missing


def test_same_address() -> None:
    assert same_address("10.0.0.2", "::ffff:10.0.0.2") and same_address("fd00::1", "fd00:0::1")
    assert not same_address("10.0.0.2", "10.0.0.3") and not same_address("10.0.0.2", None)
    assert not same_address("?", "?")


@pytest.mark.parametrize("port", [1024, 40000, 0])
def test_redeem_only_from_a_privileged_source_port(engine: Engine, port: int) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        ticket = issue_ticket(session, get_node(session, "n1"), ttl_s=900)
    with transaction(engine) as session, pytest.raises(BootTicketError, match="privileged"):
        redeem(session, ticket, port=port)  # an ordinary user on the node's own address
    with transaction(engine) as session:
        assert redeem(session, ticket, port=1023).name == "n1"  # root's ticket still good


def test_redeem_only_from_the_nodes_address_and_the_ticket_stays_good(engine: Engine) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        ticket = issue_ticket(session, get_node(session, "n1"), ttl_s=900)
    with transaction(engine) as session:
        with pytest.raises(BootTicketError, match="not from node n1's address") as caught:
            redeem(session, ticket, client="10.77.0.101")  # root elsewhere, ticket sniffed
        assert caught.value.node == "n1"
    with transaction(engine) as session:
        assert get_node(session, "n1").token_sha256 is None
        assert redeem(session, ticket).name == "n1"


def test_redeem_while_connected_is_refused_and_clears_the_ticket(engine: Engine) -> None:
    _accepted(engine)
    with transaction(engine) as session:
        ticket = issue_ticket(session, get_node(session, "n1"), ttl_s=900)
    with transaction(engine) as session:
        with pytest.raises(BootTicketError, match="node n1 is connected"):
            redeem(session, ticket, connected=lambda name: name == "n1")
        node = get_node(session, "n1")
        assert (node.boot_ticket_sha256, node.token_sha256) == (None, None)
    with transaction(engine) as session, pytest.raises(BootTicketError, match="already used"):
        redeem(session, ticket)


def test_a_pending_node_records_the_address_it_asks_from(engine: Engine) -> None:
    with transaction(engine) as session:
        node = pending_node(session, MAC, "10.77.0.50")
        assert node.address == "10.77.0.50"
        pending_node(session, MAC, "10.77.0.50")
        pending_node(session, MAC, "10.77.0.51")  # another machine with this MAC?
        assert node.address == "10.77.0.51"
        warned = session.scalars(
            select(Event.message).where(Event.node_id == node.id, Event.level == "warning")
        ).all()
        assert warned == [
            f"pending node {MAC} asked from 10.77.0.51, before from 10.77.0.50: "
            "check which machine has this MAC before accepting it"
        ]


def test_pending_nodes_are_bounded(engine: Engine) -> None:
    with transaction(engine) as session:
        for i in range(3):
            pending_node(session, f"52:54:00:00:00:0{i}", "10.77.0.50", max_pending=3)
        with pytest.raises(TooManyPendingError, match="max_pending = 3") as caught:
            pending_node(session, "52:54:00:00:00:09", "10.77.0.50", max_pending=3)
        assert (caught.value.count, caught.value.limit) == (3, 3)
        # A MAC already pending is still answered.
        assert pending_node(session, "52:54:00:00:00:01", "10.77.0.50", max_pending=3).id
        accept_node(session, "52:54:00:00:00:00", name=None, boot=BOOT)
        pending_node(session, "52:54:00:00:00:09", "10.77.0.50", max_pending=3)


def test_proxy_mode_accept_keeps_the_address_it_asked_from(engine: Engine) -> None:
    proxy = parse(
        {
            "interface": "br-beo",
            "network": "10.77.0.0/24",
            "master_address": "10.77.0.1",
            "mode": "proxy",
        }
    )
    with transaction(engine) as session:
        pending_node(session, MAC, "10.77.0.37")
        assert accept_node(session, MAC, name="n1", boot=proxy).address == "10.77.0.37"
        pending_node(session, "52:54:00:12:34:57", "10.77.0.37")
        with pytest.raises(NodeAcceptError, match="which is node n1's address"):
            accept_node(session, "52:54:00:12:34:57", name="n2", boot=proxy)
