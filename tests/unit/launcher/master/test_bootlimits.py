"""New pending nodes: a token bucket per source address and one for all of them."""

from __future__ import annotations

from launcher.master.bootlimits import PendingGate
from launcher.master.tokenbucket import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(2, 0.5, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert not bucket.available(0.0) and bucket.wait_s(0.0) == 2.0
    assert bucket.available(2.0)
    assert bucket.tokens == 1.0 and bucket.available(100.0) and bucket.tokens == 2.0


def test_one_address_gets_its_burst_then_429_others_still_get_theirs() -> None:
    clock = Clock()
    gate = PendingGate(overall=60, per_address=4, clock=clock)
    assert [gate.admit("10.77.0.9") for _ in range(4)] == [None] * 4
    refused = gate.admit("10.77.0.9")
    assert refused is not None and refused.status == 429
    assert "from 10.77.0.9 (at most 4 a minute from one address)" in refused.reason
    assert refused.retry_after_s == 15  # one token per 15 s at 4 a minute
    assert gate.admit("10.77.0.10") is None
    clock.now += 15
    assert gate.admit("10.77.0.9") is None


def test_all_addresses_together_get_503_past_the_overall_rate() -> None:
    clock = Clock()
    gate = PendingGate(overall=10, per_address=4, clock=clock)
    admitted = [gate.admit(f"10.77.1.{i}") for i in range(10)]
    assert admitted == [None] * 10
    refused = gate.admit("10.77.1.200")
    assert refused is not None and refused.status == 503
    assert "too many new nodes at once (at most 10 a minute)" in refused.reason
    assert refused.retry_after_s == 6
    clock.now += 6
    assert gate.admit("10.77.1.200") is None


def test_a_refusal_takes_no_token() -> None:
    clock = Clock()
    gate = PendingGate(overall=2, per_address=1, clock=clock)
    assert gate.admit("a") is None
    for _ in range(5):
        assert gate.admit("a") is not None  # 429s do not drain the overall bucket
    assert gate.admit("b") is None


def test_remembered_addresses_are_bounded() -> None:
    gate = PendingGate(overall=100000, per_address=1, clock=Clock(), max_addresses=8)
    for i in range(50):
        gate.admit(f"10.0.0.{i}")
    assert gate.addresses() == 8
