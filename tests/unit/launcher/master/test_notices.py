"""A repeated refusal is said once per interval, with how many were kept quiet."""

from __future__ import annotations

from launcher.master.notices import Notices, since


def test_once_per_interval_per_key_with_the_count_kept_quiet() -> None:
    now = [0.0]
    notices = Notices(600, clock=lambda: now[0])
    assert notices.due(("script", "n1")) == 0
    assert [notices.due(("script", "n1")) for _ in range(3)] == [None] * 3
    assert notices.due(("script", "n2")) == 0  # another key is said at once
    now[0] = 599.0
    assert notices.due(("script", "n1")) is None
    now[0] = 600.0
    assert notices.due(("script", "n1")) == 4
    assert notices.due(("script", "n1")) is None
    assert since(0) == "" and since(4) == " (4 more like it since the last line)"


def test_keys_are_bounded() -> None:
    notices = Notices(600, clock=lambda: 0.0, max_keys=4)
    for i in range(10):
        assert notices.due(i) == 0
    assert notices.due(0) == 0  # forgotten: said again
    assert notices.due(9) is None
