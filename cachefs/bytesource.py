"""BytesSource: an ObjectSource serving bodies held in memory.

For small files a node reads itself (its /etc/hostname, /etc/resolv.conf) that
must enter its cache as verified, pinned objects like fetched ones: the cache
hashes what it gets from any source, installs it with one rename and pins it,
so going through :meth:`NodeCache.fill` keeps one way in.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence

from cachefs.source import Incoming


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class BytesSource:
    """Objects from bodies in memory, keyed by their sha256."""

    def __init__(
        self, bodies: Iterable[bytes], *, kind: str = "node", label: str = "memory"
    ) -> None:
        self.kind = kind
        self.label = label
        self.bodies = {hashlib.sha256(b).hexdigest(): bytes(b) for b in bodies}

    def __repr__(self) -> str:
        return f"BytesSource({len(self.bodies)} objects, kind={self.kind!r})"

    def objects(self) -> dict[str, int]:
        """sha256 -> size of every body held."""
        return {sha: len(body) for sha, body in self.bodies.items()}

    async def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        """Yield the wanted objects held here (see ObjectSource)."""
        for digest in dict.fromkeys(wanted):
            body = self.bodies.get(digest)
            if body is not None:
                yield Incoming(digest, len(body), _once(body))
