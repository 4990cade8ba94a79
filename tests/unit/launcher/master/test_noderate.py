"""The per-node message rate: a token bucket, and its episodes told once."""

from __future__ import annotations

import pytest

from launcher.master.noderate import NodePace
from launcher.master.tokenbucket import TokenBucket


def test_a_rate_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="above 0 a second"):
        NodePace(0.0, rate=0.0)


def test_the_bucket_says_when_it_is_full_again() -> None:
    bucket = TokenBucket(capacity=5, per_s=10.0, now=0.0)
    for _ in range(6):
        bucket.take(0.0)
    assert not bucket.full(0.5) and bucket.full(0.6)


def test_a_burst_goes_through_then_each_message_waits_one_token() -> None:
    pace = NodePace(0.0, rate=10.0, burst_s=0.5)  # 5 tokens
    assert [pace.take(0.0) for _ in range(5)] == [0.0] * 5
    assert pace.take(0.0) == pytest.approx(0.1)
    assert pace.take(0.1) == pytest.approx(0.1)  # the caller waited; the next one token


def flood(pace: NodePace, start: float, seconds: float, rate: float) -> float:
    """Messages at ``rate`` a second for ``seconds``, each waited out as the
    control service does; returns the time it ends."""
    now = start
    for _ in range(int(seconds * rate)):
        now += 1 / rate
        now += pace.take(now)
    return now


def test_a_node_over_the_rate_is_held_to_it() -> None:
    pace = NodePace(0.0, rate=100.0, burst_s=1.0)
    end = flood(pace, 0.0, seconds=5.0, rate=1000.0)  # 5,000 messages
    # 100 from the bucket, the other 4,900 at 100 a second
    assert end == pytest.approx(49.0, rel=0.01)


def test_a_short_burst_is_slowed_silently() -> None:
    pace = NodePace(0.0, rate=100.0, burst_s=1.0, report_after_s=1.0)
    flood(pace, 0.0, seconds=0.15, rate=1000.0)  # 150 messages: 0.5 s held back
    assert pace.episode is not None and pace.report() is None


def test_a_persistent_flood_is_reported_once_per_episode() -> None:
    pace = NodePace(0.0, rate=100.0, burst_s=1.0, report_after_s=1.0)
    now = flood(pace, 0.0, seconds=1.0, rate=1000.0)
    episode = pace.report()
    assert episode is not None and episode.waited_s >= 1.0
    now = flood(pace, now, seconds=1.0, rate=1000.0)
    assert pace.report() is None  # still the same episode: told once
    assert pace.ended() is None
    # Quiet long enough for the bucket to refill: the episode ends, once.
    now += 2.0
    assert pace.take(now) == 0.0
    ended = pace.ended()
    assert ended is episode and pace.ended() is None and pace.episode is None
    # A new flood is a new episode, reported again.
    flood(pace, now, seconds=1.5, rate=1000.0)
    again = pace.report()
    assert again is not None and again is not episode


def test_a_node_at_the_rate_is_never_held_back() -> None:
    pace = NodePace(0.0, rate=100.0, burst_s=1.0)
    flood(pace, 0.0, seconds=10.0, rate=99.0)
    assert pace.episode is None
