"""Per-node tokens: issued once to an accepted node, kept by the master only as sha256.

A node proves who it is with ``Authorization: Bearer TOKEN`` on the control
WebSocket; the master compares sha256(TOKEN) with ``nodes.token_sha256`` in
constant time. The token itself is never stored on the master.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from launcher.state.models import Node

TOKEN_BYTES = 32


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, node: Node) -> str:
    """Make a new token for ``node``, store its sha256 (replacing any older one), return it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    node.token_sha256 = token_digest(token)
    session.flush()
    return token


def node_for_token(session: Session, token: str) -> Node | None:
    """The node whose stored digest matches ``token`` (compared in constant time), or None."""
    if not token:
        return None
    digest = token_digest(token)
    found: Node | None = None
    for node in session.scalars(select(Node).where(Node.token_sha256.is_not(None))):
        # Compare against every row so the time taken says nothing about which matched.
        if hmac.compare_digest(digest, node.token_sha256 or "") and found is None:
            found = node
    return found
