"""CPython's command line: options, then -c, -m or a script."""

from __future__ import annotations

from cachefs.closure.pyargs import PythonCommand, parse_python


def test_a_script_after_options_with_and_without_arguments() -> None:
    command = parse_python(["-u", "-Wd", "-W", "error", "-X", "dev", "-I", "x.py", "-c", "a"])
    assert command == PythonCommand("script", "x.py", ("-X", "dev", "-I"))
    assert command.safe_path


def test_code_and_module_joined_separate_or_clustered() -> None:
    assert parse_python(["-c", "import os"]) == PythonCommand("code", "import os", ())
    assert parse_python(["-uc", "pass", "x.py"]) == PythonCommand("code", "pass", ())
    assert parse_python(["-cpass"]).value == "pass"
    assert parse_python(["-mjson.tool", "f"]) == PythonCommand("module", "json.tool", ())
    assert parse_python(["-OO", "-E", "-m", "http.server"]) == PythonCommand(
        "module", "http.server", ("-O", "-O", "-E")
    )


def test_end_of_options_stdin_and_nothing() -> None:
    assert parse_python(["--", "-weird.py"]) == PythonCommand("script", "-weird.py", ())
    assert parse_python(["--check-hash-based-pycs", "always", "s.py"]).value == "s.py"
    assert parse_python(["-"]).kind == ""
    assert parse_python([]).kind == ""
    assert parse_python(["-c"]).kind == ""  # CPython refuses it: nothing to analyse
    assert not parse_python(["s.py"]).safe_path
