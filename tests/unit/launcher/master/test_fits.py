"""A job whose files fit in no node's cache is refused at submission (issue 12, item 7)."""

from __future__ import annotations

import pytest

from cachefs.manifest import Entry, build
from launcher.errors import SubmissionError
from launcher.master.users import check_fits

MANIFEST = build(
    "/p",
    [Entry("/p", "file", 0o755, 600 << 20, "a" * 64), Entry("/q", "file", 0o644, 1, "b" * 64)],
    owner=1000,
)


def test_files_bigger_than_the_largest_cache_are_refused() -> None:
    with pytest.raises(SubmissionError) as caught:
        check_fits(MANIFEST, [512 << 20, 256 << 20])
    assert caught.value.status == 413
    assert "largest: 536870912 bytes" in str(caught.value)


def test_files_that_fit_one_cache_pass_and_no_known_cache_means_no_check() -> None:
    check_fits(MANIFEST, [512 << 20, 1 << 30])
    check_fits(MANIFEST, [])
