"""#! lines as Linux reads them."""

from __future__ import annotations

from cachefs.closure.script import Shebang, env_command, is_python, read_shebang


def test_shebang_interpreter_and_single_argument() -> None:
    assert read_shebang(b"#!/bin/sh\necho") == Shebang("/bin/sh", None)
    assert read_shebang(b"#! /usr/bin/perl -w -T \n") == Shebang("/usr/bin/perl", "-w -T")
    assert read_shebang(b"\x7fELF") is None
    assert read_shebang(b"#!\n") is None
    # Only the first 256 bytes are read: a longer line is cut.
    long = b"#!/bin/" + b"x" * 300
    line = read_shebang(long)
    assert line is not None and len(line.interpreter) == 254


def test_env_command() -> None:
    assert env_command(Shebang("/usr/bin/env", "python3")) == "python3"
    assert env_command(Shebang("/usr/bin/env", "-S A=1 python3 -u")) == "python3"
    assert env_command(Shebang("/bin/sh", "python3")) is None
    assert env_command(Shebang("/usr/bin/env", None)) is None


def test_is_python() -> None:
    assert is_python("/usr/bin/python3.11") and is_python("/opt/py/bin/python")
    assert not is_python("/usr/bin/python3-config") and not is_python("/usr/bin/perl")
