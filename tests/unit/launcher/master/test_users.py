"""Submission checks of the user API: every field, the owner, root."""

from __future__ import annotations

from typing import Any

import pytest

from cachefs.manifest import Entry, build
from launcher.errors import SubmissionError
from launcher.master.users import check_owner, parse_submission


def _body(**changes: Any) -> dict[str, Any]:
    manifest = build("/bin/true", [Entry("/bin/true", "file", 0o755, 1, "a" * 64)], owner=1000)
    body: dict[str, Any] = {
        "argv": ["/bin/true"],
        "env": {"PATH": "/bin"},
        "cwd": "/tmp",
        "nodes": 2,
        "tasks": 2,
        "manifest": manifest.document(),
    }
    body.update(changes)
    return body


def test_a_good_body_parses() -> None:
    sub = parse_submission(_body())
    assert (sub.argv, sub.nodes, sub.tasks, sub.batch) == (["/bin/true"], 2, 2, False)
    assert sub.manifest.owner == 1000


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"argv": []}, "argv"),
        ({"argv": ["ok", 3]}, "argv"),
        ({"env": {"A": 1}}, "env"),
        ({"cwd": "relative"}, "cwd"),
        ({"nodes": 0}, "nodes"),
        ({"nodes": True}, "nodes"),
        ({"tasks": 1}, "tasks"),
        ({"batch": "yes"}, "batch"),
        ({"output": "out.txt"}, "output"),
        ({"batch": True, "output": "out-%q"}, "output"),
        ({"batch": True, "error": 3}, "error"),
        ({"batch": True, "label": "yes"}, "label"),
        ({"manifest": {"entries": "no"}}, "manifest"),
    ],
)
def test_a_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(SubmissionError) as caught:
        parse_submission(_body(**changes))
    assert caught.value.field == field
    assert caught.value.status == 400


def test_the_manifest_must_be_the_callers() -> None:
    sub = parse_submission(_body())
    with pytest.raises(SubmissionError) as caught:
        check_owner(sub, 1001, allow_root=True)
    assert caught.value.status == 403
    assert "uid 1000" in str(caught.value) and "uid 1001" in str(caught.value)


def test_root_is_refused_unless_allowed() -> None:
    manifest = build("/bin/true", [Entry("/bin/true", "file", 0o755, 1, "a" * 64)], owner=0)
    sub = parse_submission(_body(manifest=manifest.document()))
    with pytest.raises(SubmissionError) as caught:
        check_owner(sub, 0, allow_root=False)
    assert caught.value.status == 403
    assert "allow_root" in str(caught.value)
    check_owner(sub, 0, allow_root=True)


def test_batch_output_defaults_to_the_working_directory() -> None:
    sub = parse_submission(_body(batch=True))
    assert (sub.output, sub.error) == ("/tmp/beolaunch-%j.out", None)
    sub = parse_submission(_body(batch=True, output="o-%t", error="/abs/e-%n", label=True))
    assert (sub.output, sub.error, sub.label) == ("/tmp/o-%t", "/abs/e-%n", True)
    assert parse_submission(_body()).output is None
