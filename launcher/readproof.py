"""What the master has seen a file hold, so that proving read access stays cheap.

Naming a sha256 proves nothing: a user obtains an object's bytes only by
opening, as that user and now, a file with that content (docs/security.md).
Every file entry of every submission is therefore opened by the opener helper
running as the submitter, and the opened file must hold the entry's digest.
Hashing every file of every submission would make a warm launch read the whole
closure again, so the master remembers, per opened file, what it hashed:

    (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) -> sha256

taken from ``fstat`` of the very file the user opened, around one consistent
read (:func:`cachefs.store.hash_file`). Any write to the file moves its ctime
(a user can set mtime back with ``utime``, never ctime), and so does any
change of its mode, owner or ACL, so an unchanged key means the same bytes
under the same permissions. The key needs neither path nor uid: the open as
the user is what shows access, the key only saves the re-hash.

The table is in memory (the master's process), bounded, oldest forgotten
first; after a restart each file is hashed once more.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

#: Remembered files; about 200 bytes each, so the default bounds it near 40 MB.
LIMIT = 200_000

Key = tuple[int, int, int, int, int]


def file_key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class SeenFiles:
    """Digests the master computed of files users opened, by :func:`file_key`.
    Thread-safe: submissions are checked in worker threads."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._seen: OrderedDict[Key, str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def digest(self, st: os.stat_result) -> str | None:
        """The sha256 hashed from a file with exactly this fstat, or None."""
        key = file_key(st)
        with self._lock:
            found = self._seen.get(key)
            if found is not None:
                self._seen.move_to_end(key)
            return found

    def remember(self, st: os.stat_result, sha256: str) -> None:
        key = file_key(st)
        with self._lock:
            self._seen[key] = sha256
            self._seen.move_to_end(key)
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)
