"""Where a node cache gets objects from: the contract between cache and transports.

The node cache (``cachefs.cache``) asks one or more sources, in order, for the
objects it lacks. A source is the master's object service (``cachefs.client``),
a peer node's, or a directory laid out like a store (a network filesystem, or
tests). Sources stream; they never verify: the cache hashes every byte it
installs and discards an object whose sha256 does not match.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass
class Incoming:
    """One object arriving: its claimed digest and size, and its bytes as chunks.

    ``chunks`` must be consumed fully (or the fetch abandoned) before the source
    yields the next object: a batch response is one stream.
    """

    sha256: str
    size: int
    chunks: AsyncIterator[bytes]


class ObjectSource(Protocol):
    """Anything the cache can fetch objects from."""

    #: What accounting calls this source: "master" or "peer".
    kind: str
    #: For messages: a URL or directory.
    label: str

    def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        """Yield the wanted objects this source has, each once, in any order.

        Objects the source does not have are left out (the cache asks the next
        source). Raises cachefs.errors.SourceError (with ``.source``) when the
        source cannot be reached or answers wrongly.
        """
        ...
