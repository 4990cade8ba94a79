"""One-time boot tickets: what an accepted node's iPXE script carries to get its token.

The master writes a fresh random ticket into each accepted node's iPXE script
(kernel argument ``beolaunch.ticket=``) and keeps only its sha256 and expiry on
the node's row. Stage 3 trades it once (``POST /boot/enroll``) for the node's
control token. Trust model: whoever reads the script off the cluster network
before the node enrolls can take the node's place; the ticket only keeps the
token itself off the wire in iPXE's plain HTTP, bounds the window (``ttl_s``) and
makes a second use fail, so a node that finds its ticket spent shows the theft.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from launcher.errors import BootTicketError
from launcher.master.tokens import issue_token
from launcher.state.base import utcnow
from launcher.state.models import Node
from launcher.state.record import record_event

TICKET_BYTES = 32


@dataclass(frozen=True)
class Enrolled:
    """A redeemed ticket: the node's name and its new control token."""

    name: str
    token: str


def ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8")).hexdigest()


def issue_ticket(session: Session, node: Node, *, ttl_s: int, now: datetime | None = None) -> str:
    """A new ticket for ``node`` valid ``ttl_s`` seconds, replacing any older one."""
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    node.boot_ticket_sha256 = ticket_digest(ticket)
    node.boot_ticket_expires = (now or utcnow()) + timedelta(seconds=ttl_s)
    session.flush()
    return ticket


def redeem_ticket(session: Session, ticket: str, *, now: datetime | None = None) -> Enrolled:
    """Trade ``ticket`` for a new control token of its node; the ticket is spent.

    Raises BootTicketError when no node holds the ticket (wrong, or used already)
    or when it expired (it is cleared then too).
    """
    if not ticket:
        raise BootTicketError("no ticket given")
    digest = ticket_digest(ticket)
    found: Node | None = None
    for node in session.scalars(select(Node).where(Node.boot_ticket_sha256.is_not(None))):
        # Compare against every row so the time taken says nothing about which matched.
        if hmac.compare_digest(digest, node.boot_ticket_sha256 or "") and found is None:
            found = node
    if found is None or found.name is None:
        raise BootTicketError("unknown or already used")
    expires = found.boot_ticket_expires
    found.boot_ticket_sha256 = None
    found.boot_ticket_expires = None
    if expires is None or expires <= (now or utcnow()):
        record_event(
            session, f"node {found.name}: its boot ticket had expired", level="warning", node=found
        )
        session.flush()
        # The caller decides whether the clearing is committed (boothttp does).
        when = f" at {expires:%Y-%m-%d %H:%M:%S} UTC" if expires is not None else ""
        raise BootTicketError(f"expired{when}")
    token = issue_token(session, found)
    record_event(session, f"node {found.name} enrolled with its boot ticket", node=found)
    return Enrolled(found.name, token)
