"""TaskSpec.check: what the sandbox refuses before spawning anything."""

from __future__ import annotations

from dataclasses import replace

import pytest

from launcher.errors import RootTaskRefusedError, TaskSpecError
from launcher.node.tasks.sandbox import TaskSpec

GOOD = TaskSpec(["prog", "a"], {"PATH": "/bin"}, "/home/u", 1000, 1000, [1000, 27], "/home/u")


def test_a_good_spec_passes() -> None:
    GOOD.check()
    replace(GOOD, rlimits={"nofile": (64, 1024), "RLIMIT_CORE": (0, -1)}).check()
    replace(GOOD, uid=0, allow_root=True).check()


def test_root_is_refused_unless_allowed() -> None:
    with pytest.raises(RootTaskRefusedError) as info:
        replace(GOOD, uid=0).check()
    assert info.value.field == "uid" and info.value.value == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"argv": []}, "argv"),
        ({"argv": [""]}, "argv"),
        ({"argv": ["a\0b"]}, "argv"),
        ({"env": {"A=B": "c"}}, "env"),
        ({"env": {"A": "c\0"}}, "env"),
        ({"uid": -1}, "uid"),
        ({"gid": True}, "gid"),
        ({"groups": [1, -5]}, "groups"),
        ({"cwd": "relative"}, "cwd"),
        ({"home": "~u"}, "home"),
        ({"home": "/home/../etc"}, "home"),
        ({"cwd": "/home/u/../v"}, "cwd"),
        ({"rlimits": {"bogus": (1, 1)}}, "rlimits"),
        ({"rlimits": {"nofile": (1, -2)}}, "rlimits"),
    ],
)
def test_bad_values_are_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(TaskSpecError) as info:
        replace(GOOD, **changes).check()  # type: ignore[arg-type]
    assert info.value.field == field
