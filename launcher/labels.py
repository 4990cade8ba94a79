"""``--label``: each whole output line prefixed with ``node.task: ``.

Shared by ``beosub`` (the terminal) and the master (batch output files); no
imports beyond the standard library, so ``beosub`` stays quick to start.
"""

from __future__ import annotations

#: (task, stream): one stream of one task
Key = tuple[int, str]


def prefix(node: str | None, task: int) -> bytes:
    return f"{node or '?'}.{task}: ".encode()


class LineLabels:
    """Turns chunks of several streams into whole labelled lines.

    A chunk's last line without its newline waits for the next chunk of the
    same stream (``key``); :meth:`rest` ends it when the stream does.
    """

    def __init__(self) -> None:
        self.partial: dict[Key, bytes] = {}

    def feed(self, key: Key, label: bytes, data: bytes) -> bytes:
        buf = self.partial.pop(key, b"") + data
        *lines, rest = buf.split(b"\n")
        if rest:
            self.partial[key] = rest
        return b"".join(label + line + b"\n" for line in lines)

    def rest(self, key: Key, label: bytes) -> bytes:
        """The stream's unfinished last line, labelled and ended (b"" when none)."""
        rest = self.partial.pop(key, b"")
        return label + rest + b"\n" if rest else b""
