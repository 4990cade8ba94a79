"""Nodes met at boot: a new MAC becomes a pending node; an admin accepts it with a name.

Functions take a Session inside the caller's transaction. An accepted node gets
a static address on the ``[boot]`` network (outside the pool, not the master's)
so dnsmasq leases it that address and the log service matches its stage-2
syslog lines to it from the first datagram on. In proxy mode the site's DHCP
server gives addresses, so a pending node's row records the address it last
asked from, and accepting it keeps that one: the master gives boot tickets only
to a node's own address (:mod:`launcher.master.boottickets`).
"""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bootsvc.settings import BootSettings
from launcher.errors import NodeAcceptError, TooManyPendingError
from launcher.state.models import Node
from launcher.state.nodes import check_name, normalize_mac
from launcher.state.record import record_event

_AUTO_NAME = re.compile(r"n(\d+)")


def node_by_mac(session: Session, mac: str) -> Node | None:
    """The node whose boot MAC is ``mac`` (normalized), or None.

    Raises StateError for a malformed MAC.
    """
    return session.scalars(select(Node).where(Node.mac == normalize_mac(mac))).first()


def count_pending(session: Session) -> int:
    return (
        session.scalar(select(func.count()).select_from(Node).where(Node.state == "pending")) or 0
    )


def pending_node(
    session: Session, mac: str, client: str, *, max_pending: int | None = None
) -> Node:
    """The node of ``mac`` (normalized), created ``pending`` with an event when new.
    A pending node's address becomes ``client``, the address it asked from.

    Raises StateError for a malformed MAC, TooManyPendingError when the node is
    new and ``max_pending`` nodes are pending already.
    """
    mac = normalize_mac(mac)
    node = node_by_mac(session, mac)
    if node is None:
        if max_pending is not None and (count := count_pending(session)) >= max_pending:
            raise TooManyPendingError(mac, count, max_pending)
        node = Node(
            mac=mac,
            address=client,
            state="pending",
            state_reason="waiting for beoctl node accept",
        )
        session.add(node)
        session.flush()
        record_event(
            session,
            f"new node {mac} from {client} is pending: beoctl node accept {mac}",
            node=node,
        )
    elif node.state == "pending" and node.address != client:
        record_event(
            session,
            f"pending node {mac} asked from {client}, before from {node.address}: "
            "check which machine has this MAC before accepting it",
            level="warning",
            node=node,
        )
        node.address = client
    return node


def next_free_name(session: Session) -> str:
    """``nN`` with N one more than the highest ``nN`` name in use (``n1`` at first)."""
    highest = 0
    for name in session.scalars(select(Node.name).where(Node.name.is_not(None))):
        match = _AUTO_NAME.fullmatch(name or "")
        if match:
            highest = max(highest, int(match.group(1)))
    return f"n{highest + 1}"


def static_address(session: Session, boot: BootSettings | None, mac: str) -> str | None:
    """The next free address for a node on the ``[boot]`` network, or None when there is
    no ``[boot]`` table or it is in proxy mode (the site's DHCP server gives addresses).

    Raises NodeAcceptError when the network has no free address left.
    """
    if boot is None or boot.mode == "proxy":
        return None
    used = session.scalars(select(Node.address).where(Node.address.is_not(None)))
    address = boot.next_free_address(used)
    if address is None:
        raise NodeAcceptError(
            mac, f"no free address left in {boot.network} outside the pool; widen [boot] network"
        )
    return str(address)


def accept_node(session: Session, mac: str, *, name: str | None, boot: BootSettings | None) -> Node:
    """Accept the pending node of ``mac``: give it ``name`` (default: the next free
    ``nN``) and a static address (proxy mode: it keeps the address it asked from);
    its state is ``down`` until its agent registers.

    Raises NodeAcceptError for an unknown MAC, a node already accepted, a name
    taken or (proxy mode) an address another node has; StateError for a
    malformed MAC or name.
    """
    mac = normalize_mac(mac)
    node = session.scalars(select(Node).where(Node.mac == mac)).first()
    if node is None:
        raise NodeAcceptError(
            mac, "no node has booted with this MAC; 'beoctl node list --pending' shows those"
        )
    if node.state != "pending" or node.name is not None:
        raise NodeAcceptError(mac, f"already accepted as node {node.name}")
    name = check_name(name) if name is not None else next_free_name(session)
    other = session.scalars(select(Node).where(Node.name == name)).first()
    if other is not None:
        raise NodeAcceptError(mac, f"the name {name} is taken (MAC {other.mac}); pick another")
    if boot is None or boot.mode != "proxy":
        node.address = static_address(session, boot, mac)
    elif node.address is not None:
        # Proxy mode: the address its pending requests came from (the site's DHCP
        # server's), which must be no other node's: boot tickets go to it alone.
        same = select(Node).where(Node.address == node.address, Node.id != node.id)
        holder = session.scalars(same.where(Node.state != "pending")).first()
        if holder is not None:
            raise NodeAcceptError(
                mac,
                f"it asked from {node.address}, which is node {holder.name}'s address; "
                "give the machines distinct DHCP reservations",
            )
    node.name = name
    node.state = "down"
    node.state_reason = "accepted; up when its agent registers"
    session.flush()
    where = f" at {node.address}" if node.address else ""
    record_event(session, f"node {mac} accepted as {name}{where}", node=node)
    return node
