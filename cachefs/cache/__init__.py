"""The node cache: fetch objects, verify their sha256 while streaming, install
them atomically, pin them per job and evict the rest, least recently used first.

Layout (the store's, docs/cachefs.md; see layout.py): ROOT/objects/xx/<sha256>
(0444, never partial), ROOT/tmp/ (downloads in progress, and leftovers cleaned
at open), ROOT/pins.json (pins per job, replaced atomically: pins.py) and
ROOT/lock. Last use is each object's atime, set explicitly (mtime kept) on
every fill that wants it: atomic per file, survives restarts and crashes, and
needs no write of shared metadata for a cache hit. atime rather than mtime
because a link farm shows the object's mtime to the job; a read that moves
atime (relatime) is a use too. Nothing depends on the backing filesystem (tmpfs,
local disk or a network directory): only O_EXCL, rename, fsync, utime and
fcntl locks are used.

Concurrency. In one process, a map digest -> future makes concurrent fills
download an object once; when that download fails the waiters retry it with
their own sources. Across processes, one OFD byte-range lock per object (on
ROOT/lock, locks.py) lets only one process download an object; others poll the
lock, then find it installed. Pin updates take a metadata lock (byte 0 of the
same file). A download's temp file is removed at open only when its object lock
is free, so a second process opening the cache never removes a live download.

The budget is enforced when a fill starts (evicting unpinned objects first,
fill objects of this process kept); fills running in other processes at the
same time can overshoot it by what they are downloading until the next fill.
"""

from cachefs.cache.node import NodeCache
from cachefs.cache.report import CacheUsage, FillProgress, FillReport, JobPins

__all__ = ["CacheUsage", "FillProgress", "FillReport", "JobPins", "NodeCache"]
