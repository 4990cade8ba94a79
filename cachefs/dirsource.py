"""DirectorySource: an ObjectSource reading a directory laid out like the store.

``ROOT/objects/<xx>/<sha256>``: the master's store over a network filesystem,
another node's cache directory, or a test's. Files are opened once and read
in chunks in a worker thread; the cache verifies what it gets.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO

from cachefs.errors import SourceProtocolError, SourceUnreachableError
from cachefs.manifest import is_sha256
from cachefs.source import Incoming

CHUNK = 1 << 20


class DirectorySource:
    """Objects under ``root/objects``."""

    def __init__(self, root: Path, *, kind: str = "peer") -> None:
        self.root = Path(root)
        self.kind = kind
        self.label = str(self.root)

    def __repr__(self) -> str:
        return f"DirectorySource({self.label!r}, kind={self.kind!r})"

    def _open(self, digest: str) -> tuple[BinaryIO, int] | None:
        path = self.root / "objects" / digest[:2] / digest
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceUnreachableError(
                self.label, f"cannot open {path}: {exc.strerror}; check the directory's mount"
            ) from exc
        f = os.fdopen(fd, "rb")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            f.close()
            return None
        return f, st.st_size

    async def _chunks(self, f: BinaryIO, size: int, digest: str) -> AsyncGenerator[bytes, None]:
        loop = asyncio.get_running_loop()
        left = size
        try:
            while left:
                try:
                    chunk = await loop.run_in_executor(None, f.read, min(CHUNK, left))
                except OSError as exc:
                    raise SourceUnreachableError(
                        self.label, f"reading object {digest} failed: {exc.strerror}"
                    ) from exc
                if not chunk:
                    raise SourceProtocolError(
                        self.label, f"object {digest} ended {left} bytes short of {size}"
                    )
                left -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        """Yield the wanted objects present under ``root`` (see ObjectSource)."""
        if not (self.root / "objects").is_dir():
            raise SourceUnreachableError(
                self.label, "no objects/ directory there; check the path and that it is mounted"
            )
        loop = asyncio.get_running_loop()
        for digest in dict.fromkeys(wanted):
            if not is_sha256(digest):
                continue
            opened = await loop.run_in_executor(None, self._open, digest)
            if opened is None:
                continue
            f, size = opened
            chunks = self._chunks(f, size, digest)
            try:
                yield Incoming(digest, size, chunks)
            finally:  # nothing to skip: each object is its own file
                await chunks.aclose()
                f.close()
