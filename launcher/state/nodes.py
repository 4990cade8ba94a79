"""The node registry: adding, finding and listing compute nodes."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from launcher.errors import NodeRemoveError, NotFoundError, StateError
from launcher.state.base import utcnow
from launcher.state.models import NODE_STATES, JobNode, Node

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# A hostname label: what slurm.conf, DNS and dnsmasq all accept.
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def normalize_mac(mac: str) -> str:
    """``AA-BB-CC-DD-EE-FF`` or ``aa:bb:...`` -> ``aa:bb:cc:dd:ee:ff``; StateError if bad."""
    value = mac.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(value):
        raise StateError(f"MAC address {mac!r}: expected six hex pairs like 52:54:00:12:34:56")
    return value


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise StateError(
            f"node name {name!r}: expected a hostname label (a-z, 0-9, '-', "
            "at most 63 characters, not starting or ending with '-')"
        )
    return name


def add_node(
    session: Session,
    name: str,
    *,
    mac: str | None = None,
    address: str | None = None,
    state: str = "down",
) -> Node:
    """Add a node. Raises StateError for a bad or already-used name, MAC or address."""
    check_name(name)
    mac = normalize_mac(mac) if mac else None
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise StateError(f"node {name}: address {address!r} is not an IP address") from None
    if state not in NODE_STATES:
        raise StateError(f"node {name}: state {state!r} is not one of {NODE_STATES}")
    if session.scalars(select(Node).where(Node.name == name)).first():
        raise StateError(f"node {name} already exists")
    if mac and (other := session.scalars(select(Node).where(Node.mac == mac)).first()):
        raise StateError(f"MAC {mac} already belongs to node {other.name or other.id}")
    node = Node(name=name, mac=mac, address=address, state=state)
    session.add(node)
    session.flush()
    return node


def get_node(session: Session, name: str) -> Node:
    node = session.scalars(select(Node).where(Node.name == name)).first()
    if node is None:
        raise NotFoundError(f"no node named {name!r}; 'beoctl node list' shows the nodes")
    return node


def find_node(session: Session, ref: str) -> Node:
    """The node named ``ref``, else the node whose boot MAC is ``ref`` (pending
    nodes have no name yet). NotFoundError when neither."""
    node = session.scalars(select(Node).where(Node.name == ref)).first()
    if node is not None:
        return node
    try:
        mac = normalize_mac(ref)
    except StateError:
        mac = None
    if mac is not None and (node := session.scalars(select(Node).where(Node.mac == mac)).first()):
        return node
    raise NotFoundError(
        f"no node named {ref!r} or with that MAC; 'beoctl node list [--pending]' shows them"
    )


#: States in which a node's agent may be connected to the master.
LIVE_STATES = ("up", "busy")


def remove_node(session: Session, node: Node) -> None:
    """Delete ``node``: a mistaken ``node add`` or a pending MAC that will not be
    accepted. Its boot assignments and cache rows go with it; its log lines stay,
    no longer tied to it. NodeRemoveError, changing nothing, for a node that ran
    a job (accounting keeps which node ran which version: drain it instead) or
    whose agent may be connected."""
    label = node.name or node.mac or f"#{node.id}"
    runs = session.scalar(
        select(func.count()).select_from(JobNode).where(JobNode.node_id == node.id)
    )
    if runs:
        raise NodeRemoveError(
            label,
            f"took part in {runs} job(s), which accounting keeps; "
            f"'beoctl node drain {label} --reason ...' stops using it",
        )
    if node.state in LIVE_STATES:
        raise NodeRemoveError(
            label, f"is {node.state}: stop its agent or power it off first (then it is down)"
        )
    session.delete(node)
    session.flush()


def list_nodes(session: Session, *, pending: bool = False) -> list[Node]:
    stmt = select(Node).order_by(*_NODE_ORDER)
    if pending:
        stmt = stmt.where(Node.state == "pending")
    return list(session.scalars(stmt))


_NODE_ORDER = (Node.name, Node.id)


def node_states(
    session: Session,
) -> list[tuple[str | None, str, str | None, str | None, datetime | None]]:
    """Each node's (name, state, reason, address, last_seen), as ``list_nodes`` orders
    them. Columns, not ``Node`` objects: an object decodes its hardware report (JSON,
    a few kB) too, a thousand times per ``beostat nodes`` on a large cluster."""
    stmt = select(Node.name, Node.state, Node.state_reason, Node.address, Node.last_seen)
    return [
        (name, state, reason, address, seen)
        for name, state, reason, address, seen in session.execute(stmt.order_by(*_NODE_ORDER))
    ]


def report_hardware(
    session: Session, node: Node, hardware: dict[str, Any], *, at: datetime | None = None
) -> None:
    """Store a node's hardware report and mark it seen."""
    node.hardware = hardware
    node.last_seen = at or utcnow()
    session.flush()
