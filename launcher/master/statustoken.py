"""Login tokens for the status page: a browser cannot show ``SO_PEERCRED``.

A user asks the master on its Unix socket (``beostat web``): the master knows
the caller's uid from the kernel and answers with a token for that uid,
``UID.EXPIRES.MAC`` where MAC is HMAC-SHA256 (key: the cluster secret, with a
label of its own so a token is never a valid capability or node token) of
``UID.EXPIRES``. The status service checks the MAC and the expiry on every
request; nothing is stored. A token is shown once in a URL; the page moves it
into an HttpOnly, SameSite=Strict cookie and redirects to a URL without it.

Pure functions: no sockets, no database.
"""

from __future__ import annotations

import hashlib
import hmac
import time

#: Seconds a token is good for: a working day, so a page left open keeps working;
#: short enough that a leaked URL (shell history, a screen share) soon opens nothing.
TOKEN_TTL_S = 8 * 3600
#: The label mixed into the key: a token for this service only.
_LABEL = b"beolaunch status page v1\0"


class StatusTokenError(ValueError):
    """A token that does not open the page; ``str()`` says why (for the 401 page)."""


def _mac(secret: str, body: str) -> str:
    key = hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def issue(secret: str, uid: int, *, now: float | None = None, ttl_s: int = TOKEN_TTL_S) -> str:
    """A token for ``uid``, good for ``ttl_s`` seconds from ``now``."""
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{uid}.{expires}"
    return f"{body}.{_mac(secret, body)}"


def verify(secret: str, token: str, *, now: float | None = None) -> int:
    """The uid ``token`` was issued for. Raises StatusTokenError when it is
    malformed, forged (wrong MAC) or expired."""
    parts = token.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts[:2]):
        raise StatusTokenError("not a status token; run `beostat web` for a new link")
    uid, expires, mac = parts
    if not hmac.compare_digest(_mac(secret, f"{uid}.{expires}"), mac):
        raise StatusTokenError("the token's signature does not match; run `beostat web`")
    if int(expires) < (time.time() if now is None else now):
        raise StatusTokenError("the token has expired; run `beostat web` for a new link")
    return int(uid)
