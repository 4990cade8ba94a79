"""The page: escaped, self-contained, and saying so when there is nothing."""

from __future__ import annotations

from launcher.report.page import Section, render
from tests.unit.launcher.report.pagecheck import pngs


def test_values_are_escaped() -> None:
    page = render(
        "T",
        ["<b>meta</b>"],
        [Section("a <title>", "note & more", None, ("col<",), [("<script>x", 1234)])],
        "",
    )
    assert "<script>" not in page and "&lt;script&gt;x" in page
    assert "&lt;b&gt;meta" in page and "note &amp; more" in page
    assert '<td class="n">1,234</td>' in page
    assert pngs(page) == []


def test_nothing_to_show_says_why() -> None:
    page = render("T", [], [], "Nothing yet: no job has been submitted.")
    assert "Nothing yet: no job has been submitted." in page
    assert "<img" not in page
