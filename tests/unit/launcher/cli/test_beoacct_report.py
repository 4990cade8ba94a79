"""``beoacct report`` as root, in-process, on the populated fixture cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from launcher.cli import beoacct
from launcher.state.db import make_engine, transaction
from tests.integration.state.populate import FOO_V1, FOO_V2, populate
from tests.unit.launcher.report.pagecheck import pngs


@pytest.fixture
def populated(state: Path) -> Path:
    engine = make_engine(f"sqlite:///{state / 'state.db'}")
    with transaction(engine) as session:
        populate(session)
    engine.dispose()
    return state


def _report(out: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    out.mkdir(exist_ok=True)
    capsys.readouterr()
    assert beoacct.main(["report", "--out", str(out), *args]) == 0, capsys.readouterr().err
    target = out / f"beolaunch-report-{datetime.now(UTC):%Y-%m-%d}.html"
    assert capsys.readouterr().out.strip() == f"wrote {target}"
    return target.read_text()


def test_report_has_every_plot_as_a_png_and_its_numbers(
    populated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = _report(tmp_path / "out", capsys, "--path", "/usr/lib/libfoo.so.1")
    images = pngs(page)
    assert len(images) == 5, "hit rate, bytes, latency, jobs per user, versions"
    assert len(set(images)) == 5
    for title in ("Cache hit rate", "Bytes fetched, by source", "Launch latency"):
        assert f"<h2>{title}</h2>" in page
    assert "<h2>Versions of /usr/lib/libfoo.so.1</h2>" in page
    assert "3 jobs submitted" in page
    # Jobs span 25 hours: tables by 6 hours. Job 2 had 1 hit of 8 objects; job 3
    # never started, but n3 accepted it with 0 hits of 3: 1 of 11 that afternoon.
    assert '<td>2026-11-02 12:00</td><td class="n">11</td><td class="n">1</td><td>9.1%</td>' in page
    # both libfoo versions, oldest first, each with the one job that ran it
    assert page.index(FOO_V1[:12]) < page.index(FOO_V2[:12])


def test_since_leaves_older_jobs_out(
    populated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = _report(
        tmp_path / "out", capsys, "--since", "2026-11-02", "--path", "/usr/lib/libfoo.so.1"
    )
    assert "2 jobs submitted" in page and "since 2026-11-02 00:00 UTC" in page
    assert "2026-11-01" not in page
    assert FOO_V1[:12] not in page and FOO_V2[:12] in page  # v1 ran only on day 1
    assert len(pngs(page)) == 5


def test_bad_since_is_a_clear_error(
    populated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert beoacct.main(["report", "--out", str(tmp_path), "--since", "last tuesday"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("beoacct: --since 'last tuesday': expected a date"), err
    assert list(tmp_path.glob("beolaunch-report-*")) == []


def test_an_empty_database_gives_a_page_saying_so(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = _report(tmp_path / "out", capsys, "--path", "/usr/bin/python3")
    assert "Nothing yet: no job has been submitted" in page
    assert pngs(page) == []


def test_out_must_be_a_directory(state: Path, tmp_path: Path) -> None:
    assert beoacct.main(["report", "--out", str(tmp_path / "absent")]) == 2


def test_a_page_that_cannot_be_written_is_named(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / f"beolaunch-report-{datetime.now(UTC):%Y-%m-%d}.html"
    target.mkdir()  # root passes permission checks: a directory in the way does not
    capsys.readouterr()
    assert beoacct.main(["report", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"beoacct: cannot write the report to {target}: "), err
    assert list(tmp_path.glob(".beolaunch-report-*")) == []  # no temporary left
