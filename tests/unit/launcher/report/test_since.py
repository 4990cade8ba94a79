"""``--since``: dates, durations, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from launcher.errors import ReportSinceError
from launcher.report.since import parse_since

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        ("90m", NOW - timedelta(minutes=90)),
        ("4w", NOW - timedelta(weeks=4)),
        ("1d12h", NOW - timedelta(hours=36)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:30", datetime(2026, 11, 1, 12, 30, tzinfo=UTC)),
        ("2026-11-01T12:30+02:00", datetime(2026, 11, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_dates_and_durations(text: str, expected: datetime) -> None:
    got = parse_since(text, NOW)
    assert got == expected
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "7", "d7", "7y", "-7d", "2026-13-01", "", "7d x"])
def test_bad_text_is_named_with_the_forms_accepted(text: str) -> None:
    with pytest.raises(ReportSinceError) as caught:
        parse_since(text, NOW)
    assert caught.value.text == text
    assert f"--since {text!r}" in str(caught.value)
    assert "7d" in str(caught.value) and "2026-11-01" in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_future_date_is_refused_as_such() -> None:
    with pytest.raises(ReportSinceError, match="in the future"):
        parse_since("2027-01-01", NOW)
