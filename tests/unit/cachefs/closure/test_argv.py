"""resolve_command() with Debian's own interpreters: the script, module or code each
is given, what that loads or runs, and the key naming what runs."""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path

import pytest

from cachefs.closure import Closure, command_key, resolve_command
from cachefs.errors import InterpreterError, MissingLibrariesError, ScriptNotFoundError
from tests.unit.cachefs.closure.elfbuild import write_elf

ENV = {"PATH": "/usr/bin:/bin"}
PYLIB = "/usr/lib/python3.11"
PERL_BASE = "/usr/lib/x86_64-linux-gnu/perl-base"

pytestmark = pytest.mark.skipif(
    not all(os.access(p, os.X_OK) for p in ("/usr/bin/python3.11", "/usr/bin/perl", "/bin/sh"))
    or not os.path.isdir(PERL_BASE),
    reason="needs Debian 12's python3.11, perl 5.36 and sh",
)


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def _resolve(tmp_path: Path, *argv: str, env: dict[str, str] = ENV) -> Closure:
    return resolve_command(list(argv), env=env, cwd=str(tmp_path))


def _sha16(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _has(closure: Closure, *suffixes: str) -> None:
    for suffix in suffixes:
        assert any(p.endswith(suffix) for p in closure.paths), f"no {suffix} in the closure"


# --- Python ---------------------------------------------------------------------------


def test_python_script_brings_its_imports_and_the_module_beside_it(tmp_path: Path) -> None:
    script = _write(tmp_path / "job/run.py", "import json, sqlite3, ssl\nimport helper\n")
    helper = _write(tmp_path / "job/helper.py", "import base64\n")
    closure = _resolve(tmp_path, "python3", "job/run.py")
    assert closure.root == "/usr/bin/python3"
    assert closure.key == f"/usr/bin/python3 {script}"
    assert {str(script), str(helper), f"{PYLIB}/json/__init__.py", f"{PYLIB}/ssl.py"} <= set(
        closure.paths
    )
    assert f"{PYLIB}/sqlite3/__init__.py" in closure.paths
    assert f"{PYLIB}/base64.py" in closure.paths  # the local module's own import
    _has(closure, "/_sqlite3.cpython-311-x86_64-linux-gnu.so")
    _has(closure, "/_ssl.cpython-311-x86_64-linux-gnu.so")
    _has(closure, "/libssl.so.3", "/libsqlite3.so.0")  # the extensions' libraries
    assert closure.needed_by[str(helper)] == (str(script),)


def test_python_code_is_analysed_from_a_file_that_is_not_shipped(tmp_path: Path) -> None:
    code = "import json, sqlite3, ssl\nimport helper"
    helper = _write(tmp_path / "helper.py", "")  # sys.path[0] of -c is the directory
    closure = _resolve(tmp_path, "python3", "-c", code)
    assert closure.key == f"/usr/bin/python3 -c {_sha16(code)}"
    assert {str(helper), f"{PYLIB}/json/__init__.py", f"{PYLIB}/ssl.py"} <= set(closure.paths)
    _has(closure, "/_sqlite3.cpython-311-x86_64-linux-gnu.so")
    assert not [p for p in closure.paths if "beolaunch-code-" in p]  # the code's temp file
    # -I: no sys.path[0], so the module beside is not what python would import
    isolated = _resolve(tmp_path, "python3", "-I", "-c", code)
    assert str(helper) not in isolated.paths
    assert f"{PYLIB}/json/__init__.py" in isolated.paths


def test_python_module_with_runpy_and_a_local_package_main(tmp_path: Path) -> None:
    closure = _resolve(tmp_path, "python3", "-m", "json.tool")
    assert closure.key == "/usr/bin/python3 -m json.tool"
    for rel in ("json/tool.py", "json/__init__.py", "argparse.py", "runpy.py"):
        assert f"{PYLIB}/{rel}" in closure.paths
    main = _write(tmp_path / "pkg/__main__.py", "from pkg import sub\n")
    init = _write(tmp_path / "pkg/__init__.py", "")
    sub = _write(tmp_path / "pkg/sub.py", "import csv\n")
    closure = _resolve(tmp_path, "python3", "-m", "pkg")
    assert {str(main), str(init), str(sub), f"{PYLIB}/csv.py"} <= set(closure.paths)
    # a namespace package (no __init__.py), which modulefinder does not know
    tool = _write(tmp_path / "space/tool.py", "import uuid\n")
    closure = _resolve(tmp_path, "python3", "-m", "space.tool")
    assert {str(tool), f"{PYLIB}/uuid.py"} <= set(closure.paths)


def test_python_errors_name_the_script_or_module(tmp_path: Path) -> None:
    with pytest.raises(ScriptNotFoundError) as caught:
        _resolve(tmp_path, "python3", "missing.py")
    assert caught.value.script == str(tmp_path / "missing.py")
    assert "directory you submit from" in str(caught.value)
    with pytest.raises(InterpreterError) as module:
        _resolve(tmp_path, "python3", "-m", "no_such_module_here")
    assert module.value.script == "-m no_such_module_here"
    assert "no_such_module_here" in module.value.problem


# --- perl -----------------------------------------------------------------------------


def test_perl_module_switch_and_code_bring_the_module_and_its_xs_object(tmp_path: Path) -> None:
    code = "print POSIX::floor(2.5)"
    closure = _resolve(tmp_path, "perl", "-MPOSIX", "-e", code)
    assert closure.key == f"/usr/bin/perl -e {_sha16(code)}"
    for rel in ("POSIX.pm", "auto/POSIX/POSIX.so", "Fcntl.pm", "XSLoader.pm", "strict.pm"):
        assert f"{PERL_BASE}/{rel}" in closure.paths
    assert closure.needed_by[f"{PERL_BASE}/auto/POSIX/POSIX.so"] == (f"{PERL_BASE}/POSIX.pm",)


def test_perl_script_with_file_temp_posix_and_a_local_module(tmp_path: Path) -> None:
    script = _write(
        tmp_path / "bin/job.pl",
        """\
        use strict;
        use warnings;
        use FindBin;
        use lib "$FindBin::Bin/../lib";
        use File::Temp qw(tempfile);
        use POSIX qw(strftime);
        use My::Counter;
        print My::Counter::next(), "\\n";
        """,
    )
    mine = _write(tmp_path / "lib/My/Counter.pm", "package My::Counter; use List::Util;\n1;\n")
    closure = _resolve(tmp_path, "perl", "bin/job.pl")
    assert closure.key == f"/usr/bin/perl {script}"
    paths = set(closure.paths)
    assert {str(script), str(mine)} <= paths
    for rel in ("File/Temp.pm", "File/Spec/Unix.pm", "POSIX.pm", "auto/POSIX/POSIX.so"):
        assert f"{PERL_BASE}/{rel}" in paths
    assert f"{PERL_BASE}/auto/List/Util/Util.so" in paths  # the local module's XS import
    assert closure.needed_by[str(mine)] == (str(script),)


def test_a_perl_script_run_by_its_shebang_has_its_modules(tmp_path: Path) -> None:
    tool = _write(tmp_path / "tool", "#!/usr/bin/perl -w -MPOSIX\nuse Fcntl;\n", 0o755)
    closure = _resolve(tmp_path, "./tool")
    assert closure.key == str(tool)
    assert {f"{PERL_BASE}/Fcntl.pm", f"{PERL_BASE}/POSIX.pm"} <= set(closure.paths)


# --- shells ---------------------------------------------------------------------------


def test_shell_script_ships_the_commands_it_runs(tmp_path: Path) -> None:
    script = _write(
        tmp_path / "job.sh",
        """\
        d=$(mktemp -d)
        date > "$d/now"
        tar -C "$d" -cf "$d.tar" now && echo done
        no-such-command-anywhere || true
        """,
    )
    closure = _resolve(tmp_path, "sh", "job.sh")
    assert closure.key == f"/usr/bin/sh {script}"
    assert {str(script), "/usr/bin/mktemp", "/usr/bin/date", "/usr/bin/tar"} <= set(closure.paths)
    assert "/usr/bin/echo" not in closure.paths  # a builtin
    assert "/usr/bin/true" not in closure.paths
    _has(closure, "/libacl.so.1")  # tar's own libraries
    assert closure.needed_by["/usr/bin/mktemp"] == (str(script),)


def test_shell_code_ships_its_commands(tmp_path: Path) -> None:
    code = "mktemp; date | tr a-z A-Z"
    closure = _resolve(tmp_path, "sh", "-c", code)
    assert closure.key == f"/usr/bin/sh -c {_sha16(code)}"
    assert {"/usr/bin/mktemp", "/usr/bin/date", "/usr/bin/tr", "/usr/bin/dash"} <= set(
        closure.paths
    )
    assert _resolve(tmp_path, "bash", "-c", "sort x").key.startswith("/usr/bin/bash -c ")
    assert "/usr/bin/sort" in _resolve(tmp_path, "bash", "-c", "sort x").paths


def test_interpreters_called_by_a_shell_script_get_their_arguments_read(tmp_path: Path) -> None:
    tool = _write(tmp_path / "tool.py", "import mine\n")
    mine = _write(tmp_path / "mine.py", "import csv\n")
    script = _write(
        tmp_path / "batch.sh",
        """\
        python3 -u tool.py --epochs 3 > log 2>&1
        python3 "$MISSING_SCRIPT" || sh -c 'tac log; rev log'
        """,
    )
    closure = _resolve(tmp_path, "bash", "batch.sh")
    assert closure.key == f"/usr/bin/bash {script}"
    paths = set(closure.paths)
    assert {str(tool), str(mine), f"{PYLIB}/csv.py", "/usr/bin/tac", "/usr/bin/rev"} <= paths
    assert closure.needed_by[str(tool)] == ("/usr/bin/python3.11",)


def test_scripts_run_by_scripts_are_followed_a_bounded_depth(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    # step0 runs step1 ... runs step5; each also runs one real program of its own
    programs = ["tac", "rev", "od", "nl", "fold", "expand"]
    for n, program in enumerate(programs):
        then = f"step{n + 1}\n" if n + 1 < len(programs) else ""
        _write(bin_dir / f"step{n}", f"#!/bin/sh\n{program} x\n{then}", 0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    closure = _resolve(tmp_path, "sh", "-c", "step0", env=env)
    paths = set(closure.paths)
    # the code runs step0; step0, step1 and step2 are read (MAX_SCRIPT_DEPTH 3)
    assert {f"/usr/bin/{p}" for p in programs[:3]} <= paths
    assert f"{bin_dir}/step3" in paths  # found, not read: what it runs is not
    assert not {f"/usr/bin/{p}" for p in programs[3:]} & paths
    assert f"{bin_dir}/step4" not in paths


def test_a_command_found_in_a_script_never_fails_the_closure(tmp_path: Path) -> None:
    broken = write_elf(
        tmp_path / "bin/broken",
        elf_type=3,
        interp="/lib64/ld-linux-x86-64.so.2",
        needed=("libnowhere.so.9",),
    )
    broken.chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    closure = _resolve(tmp_path, "sh", "-c", "broken; date", env=env)
    assert "/usr/bin/date" in closure.paths and str(broken) in closure.paths
    with pytest.raises(MissingLibrariesError):  # named by the user, it still fails
        _resolve(tmp_path, "broken", env=env)


def test_the_key_is_known_before_resolving(tmp_path: Path) -> None:
    """beosub asks the master for the files learned under the key first."""
    _write(tmp_path / "a.py", "import json\n")
    _write(tmp_path / "a.pl", "use strict;\n")
    _write(tmp_path / "a.sh", "date\n")
    os.symlink("a.sh", tmp_path / "link.sh")
    _write(tmp_path / "tool", "#!/bin/sh\ndate\n", 0o755)
    commands = [
        ["python3", "a.py"], ["python3", "-u", "-m", "json.tool"], ["python3", "-c", "pass"],
        ["perl", "-w", "a.pl"], ["perl", "-e", "1", "-e", "2"], ["sh", "link.sh"],
        ["bash", "-c", "date"], ["./tool", "-x"], ["date"],
    ]  # fmt: skip
    keys = set()
    for argv in commands:
        key = command_key(argv, env=ENV, cwd=str(tmp_path))
        assert key == _resolve(tmp_path, *argv).key, argv
        keys.add(key)
    assert len(keys) == len(commands)
    assert command_key(["sh", "link.sh"], env=ENV, cwd=str(tmp_path)).endswith("/a.sh")


def test_a_plain_program_keeps_its_path_as_key_and_a_missing_script_is_named(
    tmp_path: Path,
) -> None:
    assert _resolve(tmp_path, "date", "+%s").key == "/usr/bin/date"
    with pytest.raises(ScriptNotFoundError):
        _resolve(tmp_path, "sh", "absent.sh")
    with pytest.raises(ScriptNotFoundError):
        _resolve(tmp_path, "perl", "absent.pl")
