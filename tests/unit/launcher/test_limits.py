"""The master's node connection cap fits the open file limit it got."""

from __future__ import annotations

import logging
import resource

import pytest

from launcher.limits import RESERVED_FILES, fit_connections


def test_the_cap_stays_when_the_descriptors_suffice(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert fit_connections(8192, 1 << 20) == 8192
        assert fit_connections(8192, 8192 + RESERVED_FILES) == 8192
        assert fit_connections(8192, resource.RLIM_INFINITY) == 8192
    assert caplog.records == []


def test_a_low_limit_lowers_the_cap_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cap = fit_connections(8192, 8192, reserved=2048)
    assert cap == 8192 - 2048
    [line] = caplog.messages
    assert "node connections capped at 6144, not 8192" in line
    assert "LimitNOFILE=" in line and "at least 10240" in line


def test_a_tiny_limit_still_leaves_half_to_the_nodes() -> None:
    assert fit_connections(8192, 1024, reserved=2304) == 512
    assert fit_connections(8192, 1, reserved=2304) == 1
