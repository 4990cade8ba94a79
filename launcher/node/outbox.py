"""What the agent sends to the master, and what it holds while the master is away.

Every message goes out through one :class:`Outbox`, which serialises writes to
the current WebSocket (one frame at a time). While there is no connection:

- ``output`` is held in memory, in order, up to :data:`HELD_OUTPUT_BYTES` of
  payload; past that it is dropped and counted, and the task's stderr gets one
  line saying how many bytes were dropped. A batch job's files get what its
  tasks wrote while the master restarted; an agent restart loses what it held.
- ``exited`` is never dropped: it is appended to the *held* list, persisted in
  the agent's state file (atomic write), and sent in the next ``hello``.

An exit that was written is kept too (*sent*, persisted) until the job's
``release``, and sent again with the next ``hello``: a socket that dies right
after a write loses what was in flight, and a master that stops before it
recorded an exit (its database was away) forgets it. The master ignores an
exit it already has; without this the job would wait for the exit forever.

On reconnecting, held output must reach the master before the exits of its
tasks (an exit can end the job, and output after the end is ignored). So with
output held the ``hello`` carries no exits; the output follows it, then each
held exit as an ordinary ``exited`` message, all under the send lock.

Output written to a socket that dies right after is lost with it (the
protocol has no acknowledgements); one whose write fails is held instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientWebSocketResponse

from cachefs.atomicfile import write_atomic
from launcher import wire
from launcher.errors import AgentStateError

log = logging.getLogger(__name__)

STATE_VERSION = 1
#: Most output payload bytes held in memory while the master is away.
HELD_OUTPUT_BYTES = 8 << 20


def load_held(state_file: Path) -> list[dict[str, Any]]:
    """The held exits recorded in ``state_file`` ([] when it does not exist).

    Raises AgentStateError for a file that is unreadable or not what the agent
    writes (each entry must decode as an ``exited`` message).
    """
    return load_state(state_file)[0]


def load_state(state_file: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The held exits and the sent ones kept until their job's release, from
    ``state_file`` (both [] when it does not exist; ``sent`` [] in an older one).

    Raises AgentStateError as :func:`load_held`."""
    try:
        text = state_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise AgentStateError(state_file, f"cannot read it: {exc.strerror}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise AgentStateError(state_file, f"not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
        raise AgentStateError(state_file, f"not a version {STATE_VERSION} agent state object")
    lists = []
    for key in ("held", "sent"):
        entries = doc.get(key, [] if key == "sent" else None)
        if not isinstance(entries, list):
            raise AgentStateError(state_file, f"'{key}' is not a list")
        for entry in entries:
            try:
                wire.decode(json.dumps(entry), {"exited": wire.Exited})
            except wire.WireError as exc:
                raise AgentStateError(state_file, f"a {key} result is malformed: {exc}") from exc
        lists.append(entries)
    return lists[0], lists[1]


def save_held(
    state_file: Path, held: list[dict[str, Any]], sent: list[dict[str, Any]] | None = None
) -> None:
    """Replace ``state_file`` with ``held`` (and ``sent``): temp file, fsync, rename,
    fsync of the dir.

    Raises AgentStateError when it cannot be written.
    """
    doc = {"version": STATE_VERSION, "held": held, "sent": sent or []}
    data = json.dumps(doc, separators=(",", ":"))
    try:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(state_file, data, mode=0o600)
    except OSError as exc:
        raise AgentStateError(state_file, f"cannot write it: {exc.strerror or exc}") from exc


def exited_document(message: wire.Exited) -> dict[str, Any]:
    """The held form of an exit: the message as sent (``v`` and ``type`` included),
    so the master reads it back with ``wire.decode``."""
    doc: dict[str, Any] = json.loads(wire.encode(message))
    return doc


class Outbox:
    """Serialised sends to the master's WebSocket, with held exits and output (see module doc)."""

    def __init__(self, state_file: Path, *, output_budget: int = HELD_OUTPUT_BYTES) -> None:
        self.state_file = state_file
        held, sent = load_state(state_file)
        self.held: list[dict[str, Any]] = held
        #: exits written to the master, kept until their job's release (module doc)
        self.sent: list[dict[str, Any]] = sent
        #: Output written while the master was away, oldest first.
        self.output: list[wire.Output] = []
        self.output_budget = output_budget
        self._output_bytes = 0
        #: (job, task) -> output bytes dropped past the budget.
        self.dropped: dict[tuple[int, int], int] = {}
        self._ws: ClientWebSocketResponse | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def attach(
        self, ws: ClientWebSocketResponse, hello: Callable[[list[dict[str, Any]]], wire.Hello]
    ) -> None:
        """Send ``hello`` on the new connection ``ws``, then what was held (output,
        then exits, when there is output; else the exits go in the hello), then
        use ``ws`` for everything else. What was written is forgotten; a write
        that fails raises ConnectionError (or aiohttp's errors) and keeps the rest."""
        async with self._lock:
            held = list(self.held)
            again = [d for d in self.sent if d not in held]  # the master ignores repeats
            if not self.output and not self.dropped:
                await ws.send_str(wire.encode(hello(held + again)))
            else:
                await ws.send_str(wire.encode(hello([])))
                count = len(self.output)
                while self.output:
                    await ws.send_str(wire.encode(self.output[0]))
                    self._output_bytes -= len(self.output.pop(0).payload())
                for (job, task), size in sorted(self.dropped.items()):
                    note = f"beolaunch: {size} bytes of output dropped while the master was away\n"
                    await ws.send_str(
                        wire.encode(wire.Output.of(job, task, "stderr", note.encode()))
                    )
                    del self.dropped[(job, task)]
                log.info("sent %d output message(s) held while the master was away", count)
                for doc in held + again:
                    await ws.send_str(json.dumps(doc, separators=(",", ":")))
            self._ws = ws
            if held:
                del self.held[: len(held)]
                self.sent.extend(held)
                self._persist()
                log.info("reported %d result(s) held while the master was away", len(held))

    def detach(self) -> None:
        self._ws = None

    async def send(self, message: wire.Message) -> bool:
        """Send ``message`` now if connected; return whether it was written.

        An ``exited`` that cannot be written is held (and persisted) instead, an
        ``output`` held in memory (or counted as dropped past the budget).
        """
        async with self._lock:
            ws = self._ws
            if ws is not None and not ws.closed:
                try:
                    await ws.send_str(wire.encode(message))
                    if isinstance(message, wire.Exited):
                        self.sent.append(exited_document(message))
                        self._persist()
                    return True
                except (ConnectionError, RuntimeError) as exc:
                    log.warning("lost the master while sending %s: %s", message.type, exc)
                    self._ws = None
            if isinstance(message, wire.Exited):
                self.held.append(exited_document(message))
                self._persist()
                log.info(
                    "holding the result of job %d task %d until the master is back",
                    message.job,
                    message.task,
                )
            elif isinstance(message, wire.Output):
                self._hold_output(message)
            return False

    def forget(self, job: int) -> None:
        """The master released ``job``: its exits need not be sent again."""
        kept = [d for d in self.sent if d.get("job") != job]
        if len(kept) != len(self.sent):
            self.sent = kept
            self._persist()

    def _hold_output(self, message: wire.Output) -> None:
        size = len(message.payload())
        key = (message.job, message.task)
        if key in self.dropped or self._output_bytes + size > self.output_budget:
            if not self.dropped:
                log.warning(
                    "holding no more output while the master is away (%d bytes held)",
                    self._output_bytes,
                )
            # Once a task's output is dropped, later output of it is too: what
            # reaches its file stays a prefix, followed by the note.
            self.dropped[key] = self.dropped.get(key, 0) + size
            return
        self.output.append(message)
        self._output_bytes += size

    def _persist(self) -> None:
        try:
            save_held(self.state_file, self.held, self.sent)
        except AgentStateError as exc:
            # The result stays in memory and still goes out in the next hello;
            # only an agent restart before then would lose it.
            log.error("%s", exc)
