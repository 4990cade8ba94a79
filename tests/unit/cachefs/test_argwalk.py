"""The walk over a command line's leading options that perl's reader and beonode step share."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cachefs
from cachefs.argwalk import LeadingOptions


def _dashed(arg: str) -> bool:
    return arg.startswith("-")


@pytest.mark.parametrize(
    ("args", "options", "operands"),
    [
        (["-a", "-b", "prog", "-c"], ["-a", "-b"], ["prog", "-c"]),
        (["-a", "--", "-b", "prog"], ["-a"], ["-b", "prog"]),
        (["--", "--"], [], ["--"]),
        (["prog"], [], ["prog"]),
        (["-a", "-b"], ["-a", "-b"], []),
        ([], [], []),
    ],
)
def test_options_end_at_double_dash_or_the_first_operand(
    args: list[str], options: list[str], operands: list[str]
) -> None:
    words = LeadingOptions(args, _dashed)
    assert list(words) == options
    assert words.operands() == operands


def test_an_option_takes_the_next_word_as_its_value() -> None:
    words = LeadingOptions(["-o", "out", "-v", "--", "x"], _dashed)
    seen: list[tuple[str, str | None]] = []
    for arg in words:
        seen.append((arg, words.value() if arg == "-o" else None))
    assert seen == [("-o", "out"), ("-v", None)]
    assert words.operands() == ["x"]


def test_a_value_past_the_end_is_none() -> None:
    words = LeadingOptions(("-o",), _dashed)
    assert [(arg, words.value()) for arg in words] == [("-o", None)]
    assert words.operands() == []


def test_the_walker_decides_nothing_the_reader_does_not() -> None:
    # "-" is an operand to perl's reader, an option to one that says so
    assert list(LeadingOptions(["-", "x"], lambda a: a != "-" and _dashed(a))) == []
    assert list(LeadingOptions(["-", "x"], _dashed)) == ["-"]


def test_importing_it_loads_nothing_else() -> None:
    # beonode step's fast form imports it under python -I -S at every step start
    tree = os.path.dirname(os.path.dirname(os.path.abspath(cachefs.__file__)))
    code = (
        f"import sys; sys.path[:0] = [{tree!r}]; before = set(sys.modules); "
        "import cachefs.argwalk; print(sorted(set(sys.modules) - before))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    # __future__: one small module, which enter_step and mounts import anyway
    assert done.stdout.strip() == "['__future__', 'cachefs', 'cachefs.argwalk']"
