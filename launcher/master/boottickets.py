"""One-time boot tickets: how a booting node proves it is that node and gets its token.

The master writes a fresh random ticket into an accepted node's iPXE script
(kernel argument ``beolaunch.ticket=``) and keeps only its sha256 and expiry on
the node's row. Stage 3 trades it once (``POST /boot/enroll``) for the node's
control token.

Trust model. The cluster network is shared with every job, so a ticket must be
worth nothing to anyone but root on the booting machine:

- **Issued** (:func:`ticket_refusal`) only for an accepted node that is not
  connected (no live control session: a node that runs jobs has its token and
  needs no ticket), and only to a request from the node's own address
  (``nodes.address``: the static lease given at accept, in proxy mode the
  address it asked from while pending). Each issue replaces the node's older
  ticket, so at most one is alive and a legitimate reboot simply gets a new one.
- **Short-lived**: ``[boot] ticket_ttl_s``, 300 s by default.
- **Redeemed** (:func:`redeem_ticket`) only from a privileged source port
  (< 1024: only root can bind one, as Warewulf's runtime overlays require) and
  from the node's address, never while the node is connected; **spent** by the
  redemption, atomically (a conditional UPDATE), so two redemptions race to one.

What remains: root on the node's own machine, or a machine that can send from
the node's address (address spoofing on the cluster segment), can enroll in the
node's place while it is not connected; the real node then finds its ticket
spent (403, logged on both sides).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from launcher.errors import BootTicketError
from launcher.master.tokens import issue_token
from launcher.state.base import utcnow
from launcher.state.models import Node
from launcher.state.record import record_event

TICKET_BYTES = 32
#: Source ports below this need root (CAP_NET_BIND_SERVICE) to bind.
PRIVILEGED_PORTS = 1024


@dataclass(frozen=True)
class Enrolled:
    """A redeemed ticket: the node's name and its new control token."""

    name: str
    token: str


def ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8")).hexdigest()


def same_address(a: str | None, b: str | None) -> bool:
    """Whether two textual IP addresses are one (``::ffff:10.0.0.2`` is ``10.0.0.2``)."""
    if not a or not b:
        return False
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped is not None:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped is not None:
        y = y.ipv4_mapped
    return x == y


def ticket_refusal(node: Node, client: str, *, connected: bool) -> str | None:
    """Why ``node`` (accepted) gets no ticket in a script asked for from ``client``;
    None when it does. The reasons are shown on the node's console and logged."""
    name = node.name or node.mac or "?"
    if connected:
        return (
            f"node {name} is connected (its agent is up): a boot ticket is only given "
            "to a node that is not; if it rebooted, the master notices within a minute"
        )
    if node.address is None:
        return (
            f"node {name} has no address recorded: a boot ticket is only given to the "
            "node's own address; remove it (beoctl node remove) and accept it again"
        )
    if not same_address(client, node.address):
        return (
            f"node {name} asked from {client}, not from its address {node.address}: "
            "renewing its DHCP lease"
        )
    return None


def issue_ticket(session: Session, node: Node, *, ttl_s: int, now: datetime | None = None) -> str:
    """A new ticket for ``node`` valid ``ttl_s`` seconds, replacing any older one.

    The caller has checked :func:`ticket_refusal`.
    """
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    node.boot_ticket_sha256 = ticket_digest(ticket)
    node.boot_ticket_expires = (now or utcnow()) + timedelta(seconds=ttl_s)
    session.flush()
    return ticket


def _holder(session: Session, digest: str) -> Node | None:
    found: Node | None = None
    for node in session.scalars(select(Node).where(Node.boot_ticket_sha256.is_not(None))):
        # Compare against every row so the time taken says nothing about which matched.
        if hmac.compare_digest(digest, node.boot_ticket_sha256 or "") and found is None:
            found = node
    return found


def _spend(session: Session, node: Node, digest: str) -> bool:
    """Clear ``node``'s ticket if it is still ``digest``; False when another redemption
    spent it first (on PostgreSQL the UPDATE waits for that one to commit)."""
    spent = session.execute(
        update(Node)
        .where(Node.id == node.id, Node.boot_ticket_sha256 == digest)
        .values(boot_ticket_sha256=None, boot_ticket_expires=None)
        .execution_options(synchronize_session=False)
    )
    session.refresh(node)
    return bool(getattr(spent, "rowcount", 0) == 1)


def redeem_ticket(
    session: Session,
    ticket: str,
    *,
    client: str,
    port: int,
    connected: Callable[[str], bool],
    now: datetime | None = None,
) -> Enrolled:
    """Trade ``ticket``, sent from ``client``:``port``, for a new control token of its
    node; the ticket is spent.

    Raises BootTicketError (``.node`` set once the ticket matched a node) when
    the source port is not privileged (nothing is looked up), no node holds the
    ticket (wrong, or used already), the request is not from the node's address
    (the ticket stays good for the node), the node is connected (the ticket is
    cleared) or the ticket expired (cleared). The caller decides whether the
    clearing is committed (boothttp does).
    """
    if not 0 < port < PRIVILEGED_PORTS:
        raise BootTicketError(
            f"sent from port {port}: enroll only from a privileged source port "
            f"(< {PRIVILEGED_PORTS}), which only root on the node can bind"
        )
    if not ticket:
        raise BootTicketError("no ticket given")
    digest = ticket_digest(ticket)
    found = _holder(session, digest)
    if found is None or found.name is None:
        raise BootTicketError("unknown or already used")
    name = found.name
    if not same_address(client, found.address):
        raise BootTicketError(f"sent from {client}, not from node {name}'s address", name)
    expires = found.boot_ticket_expires
    if not _spend(session, found, digest):
        raise BootTicketError("unknown or already used", name)
    if connected(name):
        record_event(
            session,
            f"node {name}: boot ticket from {client} refused and cleared: the node is connected",
            level="warning",
            node=found,
        )
        raise BootTicketError(f"node {name} is connected; it needs no ticket", name)
    if expires is None or expires <= (now or utcnow()):
        record_event(
            session, f"node {name}: its boot ticket had expired", level="warning", node=found
        )
        when = f" at {expires:%Y-%m-%d %H:%M:%S} UTC" if expires is not None else ""
        raise BootTicketError(f"expired{when}", name)
    token = issue_token(session, found)
    record_event(session, f"node {name} enrolled with its boot ticket from {client}", node=found)
    return Enrolled(name, token)
