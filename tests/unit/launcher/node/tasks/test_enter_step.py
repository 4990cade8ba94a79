"""enter_step's argument parsing and command line, and what it refuses before any namespace."""

from __future__ import annotations

import os
import sys

import pytest

from launcher.node.tasks import enter_step as step_module
from launcher.node.tasks.enter_step import StepFailed, StepOptions, command, enter_step, parse_args


def test_options_then_the_program_with_its_own_options() -> None:
    opts = parse_args(["--root", "/r", "--tmp=/t", "--home", "/h", "--", "prog", "--root", "x"])
    assert (opts.root, opts.tmp, opts.home, opts.cwd, opts.allow_root) == (
        "/r",
        "/t",
        "/h",
        None,
        False,
    )
    assert opts.argv == ["prog", "--root", "x"]
    # Without "--", the first non-option starts the program.
    assert parse_args(["--root=/r", "--tmp", "/t", "--allow-root", "sh", "-c", "x"]).argv == [
        "sh",
        "-c",
        "x",
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tmp", "/t", "--", "prog"], "--root missing"),
        (["--root", "/r", "--", "prog"], "--tmp missing"),
        (["--root", "/r", "--tmp", "/t", "--"], "no program given"),
        (["--root", "/r", "--tmp", "/t", "--", ""], "no program given"),
        (["--root", "/r", "--tmp"], "--tmp needs a value"),
        (["--bogus", "x", "--", "prog"], "unknown option --bogus"),
        (["-h"], "usage: beonode step"),
    ],
)
def test_usage_errors_exit_2_and_say_why(args: list[str], says: str) -> None:
    with pytest.raises(StepFailed) as info:
        parse_args(args)
    assert info.value.status == step_module.EXIT_USAGE and says in str(info.value)


def test_the_command_line_parses_back() -> None:
    argv = command("/r", "/t", ["prog", "--tmp", "y"], home="/h", cwd="/c")
    assert argv[:4] == [sys.executable, "-I", "-S", "-c"]
    tree = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(step_module.__file__))))
    assert repr(tree) in argv[4] and "from launcher.node.tasks import enter_step" in argv[4]
    opts = parse_args(argv[5:])
    assert (opts.root, opts.tmp, opts.home, opts.cwd) == ("/r", "/t", "/h", "/c")
    assert opts.argv == ["prog", "--tmp", "y"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for root")
def test_root_is_refused_before_any_namespace() -> None:
    ns = os.readlink("/proc/self/ns/user")
    with pytest.raises(StepFailed) as info:
        enter_step(StepOptions("/nonexistent", "/nonexistent", ["true"]))
    assert (info.value.step, info.value.status) == ("refuse root", step_module.EXIT_REFUSED)
    assert os.readlink("/proc/self/ns/user") == ns


def test_a_missing_root_is_named_before_any_namespace() -> None:
    ns = os.readlink("/proc/self/ns/user")
    with pytest.raises(StepFailed) as info:
        enter_step(StepOptions("/no/such/root", "/tmp", ["true"], allow_root=True))
    assert info.value.step == "check root" and "/no/such/root" in info.value.detail
    assert info.value.status == step_module.EXIT_CANNOT_ENTER
    assert os.readlink("/proc/self/ns/user") == ns


@pytest.mark.parametrize("field", ["home", "cwd"])
def test_a_relative_home_or_cwd_is_refused_before_any_namespace(field: str) -> None:
    ns = os.readlink("/proc/self/ns/user")
    here = os.path.dirname(step_module.__file__)
    opts = StepOptions(here, here, ["true"], allow_root=True, **{field: "rel/dir"})
    with pytest.raises(StepFailed) as info:
        enter_step(opts)
    assert (info.value.step, info.value.detail) == (
        f"check {field}",
        "rel/dir is not an absolute path",
    )
    assert os.readlink("/proc/self/ns/user") == ns


def test_binds_repeat_and_go_through_the_command_line() -> None:
    opts = parse_args(["--root=/r", "--tmp=/t", "--bind", "/scratch", "--bind=/data", "--", "p"])
    assert opts.binds == ["/scratch", "/data"] and opts.argv == ["p"]
    argv = command("/r", "/t", ["p"], binds=["/scratch", "/home"])
    assert parse_args(argv[5:]).binds == ["/scratch", "/home"]
