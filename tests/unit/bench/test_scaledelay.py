"""bench.scaledelay: heartbeat delays from send times and polled last_seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scaledelay import heartbeat_delays, percentile


def test_percentile_is_nearest_rank() -> None:
    assert percentile([float(x) for x in range(1, 101)], 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_each_beat_is_matched_to_the_first_last_seen_at_or_after_it(tmp_path: Path) -> None:
    record = tmp_path / "beats.json"
    record.write_text(json.dumps({"beats": {"a": [10.0, 15.0], "b": [11.0]}}))
    polls = [
        (10.5, {"a": 9.0, "b": 9.0}),
        (11.0, {"a": 10.2, "b": 9.0}),  # a's first beat: 0.2 s
        (12.0, {"a": 10.2, "b": 11.7}),  # b's: 0.7 s
        (16.0, {"a": 15.1, "b": 11.7}),  # a's second: 0.1 s
        (20.0, {"a": 15.1, "b": 11.7}),
    ]
    delays = heartbeat_delays(record, polls, 0.0, 20.0)
    assert delays.count == 3
    assert delays.max == pytest.approx(0.7)
    assert delays.unrecorded == 0


def test_a_beat_never_recorded_counts_with_its_age(tmp_path: Path) -> None:
    record = tmp_path / "beats.json"
    record.write_text(json.dumps({"beats": {"a": [10.0]}}))
    polls = [(11.0, {"a": 5.0}), (14.0, {"a": 5.0})]
    delays = heartbeat_delays(record, polls, 0.0, 14.5)
    assert delays.unrecorded == 1
    assert delays.p99 == pytest.approx(4.5)
