"""A job's kept history and each watcher's queue are bounded in bytes, not messages."""

from __future__ import annotations

import asyncio

from launcher.master.jobs import JobRun
from launcher.master.outputbuffers import (
    MESSAGE_OVERHEAD,
    History,
    WatchQueue,
    held_bytes,
    payload_bytes,
)
from launcher.wire import Done, Error, Exited, Message, Output, Progress

KIB = 1 << 10


def chunk(n: int, size: int = 64 * KIB) -> Output:
    return Output.of(1, 0, "stdout", bytes([n % 256]) * size)


def drain(queue: asyncio.Queue[Message]) -> list[Message]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def test_sizes_count_the_base64_payload() -> None:
    for size in (0, 1, 2, 3, 64 * KIB):
        message = Output.of(1, 0, "stdout", b"x" * size)
        assert payload_bytes(message) == size
        assert held_bytes(message) == len(message.data) + MESSAGE_OVERHEAD
    assert payload_bytes(Done(1, 0)) == 0


def test_history_keeps_the_newest_bytes_and_says_what_it_dropped() -> None:
    history = History(limit=1 << 20)
    for n in range(100):  # 6.4 MiB of output into a 1 MiB history
        history.append(chunk(n))
    assert history.bytes <= 1 << 20
    replay = history.replay()
    note, kept = replay[0], replay[1:]
    assert isinstance(note, Error) and note.message.startswith("output dropped: ")
    assert kept[-1] == chunk(99)  # the newest survive
    assert history.dropped == (100 - len(kept)) * 64 * KIB
    assert f"{history.dropped} bytes" in note.message


def test_a_small_history_replays_everything_without_a_note() -> None:
    history = History()
    history.append(chunk(1, 10))
    history.append(Done(1, 0))
    assert history.replay() == [chunk(1, 10), Done(1, 0)]


def test_a_watcher_that_keeps_up_gets_everything_in_order() -> None:
    queue = WatchQueue(limit=1 << 20)
    sent = [chunk(n) for n in range(100)]
    got = []
    for message in sent:
        queue.put_nowait(message)
        got.append(queue.get_nowait())
    assert got == sent and queue.dropped == 0 and queue.bytes == 0


def test_a_slow_watcher_is_skipped_ahead_and_told_how_much() -> None:
    queue = WatchQueue(limit=1 << 20)
    queue.put_nowait(Progress(1, 1, 1, 10, 10))
    for n in range(40):  # 2.5 MiB for a watcher that never reads
        queue.put_nowait(chunk(n))
        if n == 5:
            queue.put_nowait(Exited(1, 0, 0, None, {}))
        assert queue.bytes <= 1 << 20
    queue.put_nowait(Done(1, 0))
    got = drain(queue)
    notes = [m for m in got if isinstance(m, Error)]
    assert len(notes) == 1  # one note, merged across skips
    assert got[0] is notes[0]  # where the first dropped message was
    assert "you were too slow" in notes[0].message
    outputs = [m for m in got if isinstance(m, Output)]
    assert outputs == [chunk(n) for n in range(40 - len(outputs), 40)]  # the newest
    dropped = (40 - len(outputs)) * 64 * KIB
    assert queue.dropped == dropped and f"output dropped: {dropped} bytes" in notes[0].message
    # exits and the end are never dropped, and keep their order
    assert Exited(1, 0, 0, None, {}) in got and got[-1] == Done(1, 0)
    assert queue.bytes == 0


def test_a_note_already_taken_starts_a_new_count() -> None:
    queue = WatchQueue(limit=256 * KIB)
    for n in range(10):
        queue.put_nowait(chunk(n))
    first = drain(queue)[0]
    assert isinstance(first, Error)
    for n in range(10):
        queue.put_nowait(chunk(n))
    second = drain(queue)[0]
    assert isinstance(second, Error) and second is not first


def test_publishing_to_a_stopped_watcher_never_grows_the_job_past_its_bounds() -> None:
    async def main() -> None:
        run = JobRun(1, 1000, 1, ["a"])
        stopped = run.watch()
        assert isinstance(stopped, WatchQueue)
        for n in range(3200):  # 200 MiB of output, nobody reading
            run.publish(chunk(n))
        assert stopped.bytes <= stopped.limit and run.history.bytes <= run.history.limit
        assert stopped.dropped > 180 << 20
        late = run.watch()
        first = late.get_nowait()
        assert isinstance(first, Error) and "earliest" in first.message

    asyncio.run(main())
