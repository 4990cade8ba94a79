"""A fake master for the clients' tests: canned bytes on a Unix socket."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class FakeMaster:
    """Accepts one connection on ``path``, keeps the request it read, sends
    ``answer`` in pieces of ``step`` bytes, then closes (or waits for ``release``)."""

    def __init__(self, path: Path, answer: bytes, step: int = 0, hold: bool = False) -> None:
        self.path = path
        self.answer = answer
        self.step = step or len(answer) or 1
        self.hold = hold
        self.request = b""
        self.release = threading.Event()
        self.saw_close = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while b"\r\n\r\n" not in self.request:
                self.request += conn.recv(65536)
            head, _, body = self.request.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(65536)
                self.request = head + b"\r\n\r\n" + body
            try:
                for i in range(0, len(self.answer), self.step):
                    conn.sendall(self.answer[i : i + self.step])
                    time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client had what it wanted (a stream read up to its Done)
            if self.hold:
                if conn.recv(1) == b"":
                    self.saw_close.set()
                self.release.wait(10)

    def close(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.listener.close()
