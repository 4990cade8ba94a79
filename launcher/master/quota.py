"""Per-user store quotas: how many bytes of the store a user's submissions brought in.

The store keeps every version of every file submitted (until ``beoctl store
gc``), so one user shipping a large ``--include`` again and again could fill
the master's disk for everyone. Each object is charged to the user who first
brought it into the store (``objects.owner_uid``) for as long as it is there;
a submission that would add new bytes past ``[store] user_quota_bytes``
(default 100 GiB; 0: no quota) is refused at once, before anything is copied,
with what the user holds and what to do. Objects someone else stored first
(the system's libraries) cost nothing.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cachefs.manifest import Manifest
from cachefs.store import StoreReader
from launcher.errors import SubmissionError
from launcher.state.models import StoredObject


def held_bytes(session: Session, store: StoreReader, uid: int) -> int:
    """Bytes of the objects ``uid`` first stored that the store still holds."""
    rows = session.execute(
        select(StoredObject.sha256, StoredObject.size).where(StoredObject.owner_uid == uid)
    )
    return sum(size for sha, size in rows if store.has(sha))


def check_quota(
    session: Session, store: StoreReader, manifest: Manifest, uid: int, quota: int
) -> None:
    """Raise SubmissionError (413) when storing ``manifest``'s new objects would
    take ``uid`` past ``quota`` bytes (0: no quota)."""
    if not quota:
        return
    new = sum(size for sha, size in manifest.objects().items() if not store.has(sha))
    if not new:
        return
    held = held_bytes(session, store, uid)
    if held + new > quota:
        raise SubmissionError(
            "manifest",
            f"your files in the master's store would pass your quota: you hold {held} "
            f"bytes of {quota}, this adds {new}; remove old versions (an admin runs "
            "'beoctl store gc') or ship less",
            status=413,
        )
