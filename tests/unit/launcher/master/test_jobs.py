"""Task placement and results of one job run."""

from __future__ import annotations

from launcher.master.jobs import JobRun
from launcher.wire import Done


def test_tasks_go_round_robin_and_the_worst_status_wins() -> None:
    run = JobRun(1, 1000, 5, ["a", "b"])
    assert run.tasks_of("a") == [0, 2, 4] and run.tasks_of("b") == [1, 3]
    for task, status in [(0, 0), (2, 0), (4, 0)]:
        run.statuses[task] = status
    assert run.node_done("a") and not run.node_done("b") and not run.done()
    run.statuses[1] = 3
    run.statuses[3] = 130
    assert run.done() and run.worst() == 130 and run.node_status("b") == 130


def test_a_late_watcher_gets_what_was_published() -> None:
    run = JobRun(1, 1000, 1, ["a"])
    run.publish(Done(1, 0))
    queue = run.watch()
    assert queue.get_nowait() == Done(1, 0)
