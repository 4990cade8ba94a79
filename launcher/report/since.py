"""``--since``: a date, or a duration back from now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from launcher.errors import ReportSinceError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")


def parse_since(text: str, now: datetime) -> datetime:
    """The aware UTC time ``text`` names: an ISO date or time (UTC unless it
    carries an offset), or a duration before ``now`` (``90m``, ``12h``, ``7d``,
    ``4w``, or sums such as ``1d12h``).

    Raises ReportSinceError naming the text and the accepted forms.
    """
    value = text.strip()
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return now - timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ReportSinceError(text) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when > now:
        raise ReportSinceError(text, "is in the future: nothing has happened since then")
    return when.astimezone(UTC)
