"""The per-node message rate: a token bucket, and its episodes told once."""

from __future__ import annotations

import pytest

from launcher.master.noderate import NodePace, TokenBucket


def test_a_full_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.1)  # the 6th waits one token's time
    assert bucket.take(0.0) == pytest.approx(0.2)  # borrowed tokens queue up
    assert bucket.take(1.0) == 0.0  # refilled at 10 a second (0.3 s of debt paid)
    assert not bucket.full(1.0) and bucket.full(2.0)


def test_refill_stops_at_the_burst() -> None:
    bucket = TokenBucket(rate=100.0, burst=3, now=0.0)
    bucket.refill(1000.0)
    assert bucket.tokens == 3


def test_a_bucket_without_a_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0.0, burst=1, now=0.0)


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
