"""Syslog datagram parsing: severity to level, the PRI stripped."""

from __future__ import annotations

import pytest

from launcher.master.logs import parse


@pytest.mark.parametrize(
    ("datagram", "level"),
    [
        (b"<11>kernel: oops", "error"),  # user.err
        (b"<12>disk slow", "warning"),  # user.warning
        (b"<14>started", "info"),  # user.info
        (b"<15>details", "debug"),  # user.debug
        (b"<0>panic", "error"),  # kern.emerg
    ],
)
def test_severity_picks_the_level(datagram: bytes, level: str) -> None:
    got_level, message = parse(datagram + b"\n")
    assert got_level == level
    assert not message.startswith("<") and not message.endswith("\n")


def test_a_line_without_pri_is_info_and_kept_whole() -> None:
    assert parse(b"no pri here") == ("info", "no pri here")
    assert parse(b"<999>too big") == ("info", "<999>too big")
