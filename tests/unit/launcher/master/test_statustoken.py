"""Status page login tokens: a uid signed with the cluster secret, with an expiry."""

from __future__ import annotations

import pytest

from launcher.master.statustoken import StatusTokenError, issue, verify

SECRET = "ab" * 32


def test_a_token_names_the_uid_it_was_issued_for() -> None:
    assert verify(SECRET, issue(SECRET, 1234, now=1000.0), now=1001.0) == 1234


def test_a_changed_uid_breaks_the_signature() -> None:
    _uid, expires, mac = issue(SECRET, 1234, now=1000.0).split(".")
    with pytest.raises(StatusTokenError, match="signature"):
        verify(SECRET, f"0.{expires}.{mac}", now=1001.0)


def test_another_secret_does_not_verify_it() -> None:
    with pytest.raises(StatusTokenError, match="signature"):
        verify("cd" * 32, issue(SECRET, 7, now=1000.0), now=1001.0)


def test_an_expired_token_is_refused() -> None:
    token = issue(SECRET, 7, now=1000.0, ttl_s=60)
    assert verify(SECRET, token, now=1060.0) == 7
    with pytest.raises(StatusTokenError, match="expired"):
        verify(SECRET, token, now=1061.0)


@pytest.mark.parametrize("token", ["", "x.y.z", "1.2", "-1.99999999999.00", "1.2.3.4"])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(StatusTokenError, match="beostat web"):
        verify(SECRET, token, now=1000.0)
