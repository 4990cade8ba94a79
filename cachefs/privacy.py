"""Object directories readable by their owner only.

A store or a cache holds objects of every user's files, some of them copies of
0600 files, under names anyone can learn (``beoacct`` shows digests). Objects
are mode 0444 so that one owner can serve and hardlink them; the directory
above is what keeps other users out, so it is made mode 0700, and an existing
one left more open (an older install) is tightened when we own it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_MODE = 0o700


def make_private(path: Path) -> None:
    """Create ``path`` (and its parents) if missing; make it mode 0700 when it is a
    directory we own and others could read or search it. Raises OSError."""
    path.mkdir(mode=PRIVATE_MODE, parents=True, exist_ok=True)
    st = os.stat(path)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
