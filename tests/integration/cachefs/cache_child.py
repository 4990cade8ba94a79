"""A process that fills a node cache with one object, for crash and cross-process tests.

    python -m tests.integration.cachefs.cache_child ROOT DATA LOG MODE

ROOT: the cache directory; DATA: a file holding the object; LOG: a file this
process's source appends one line to per object it serves; MODE: "slow" (sleep
between chunks) or "stall" (send half the object, then hang until killed).
Prints the FillReport as JSON on success.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from cachefs.cache import NodeCache
from cachefs.source import Incoming

CHUNK = 64 * 1024


class FileSource:
    kind = "master"

    def __init__(self, data: bytes, log: Path, mode: str) -> None:
        self.data = data
        self.sha = hashlib.sha256(data).hexdigest()
        self.log = log
        self.mode = mode
        self.label = f"file-source-{os.getpid()}"

    async def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        for sha in wanted:
            if sha == self.sha:
                with self.log.open("a") as f:
                    f.write(f"{os.getpid()} {sha}\n")
                yield Incoming(sha, len(self.data), self.chunks())

    async def chunks(self) -> AsyncIterator[bytes]:
        half = len(self.data) // 2
        for start in range(0, len(self.data), CHUNK):
            if self.mode == "stall" and start >= half:
                await asyncio.sleep(3600)
            await asyncio.sleep(0.02 if self.mode == "slow" else 0)
            yield self.data[start : start + CHUNK]


async def main(root: Path, data: bytes, log: Path, mode: str) -> None:
    source = FileSource(data, log, mode)
    with NodeCache(root, 1 << 30) as cache:
        report = await cache.fill({source.sha: len(data)}, [source], job=f"job-{os.getpid()}")
    print(json.dumps({"objects_hit": report.objects_hit, "bytes_from": report.bytes_from}))


if __name__ == "__main__":
    root, data_file, log_file, run_mode = sys.argv[1:5]
    asyncio.run(main(Path(root), Path(data_file).read_bytes(), Path(log_file), run_mode))
