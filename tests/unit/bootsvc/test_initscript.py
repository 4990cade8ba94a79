"""The shipped /init scripts, made whole from their shared shell fragments."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import bootsvc
from bootsvc import initscript, stage2, stage3

FRAGMENT = (Path(bootsvc.__file__).parent / "cmdline_arg.sh").read_text("utf-8")


@pytest.mark.parametrize("script", [stage2.init_script(), stage3.init_script()])
def test_each_init_is_whole_with_the_shared_function_once(script: str) -> None:
    assert script.startswith("#!/bin/sh\n")
    assert initscript.INCLUDE not in script
    assert script.count(FRAGMENT) == 1 and script.count("arg() {") == 1
    done = subprocess.run(["sh", "-n", "-c", script], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_sources_name_the_fragment_instead_of_repeating_it() -> None:
    here = Path(bootsvc.__file__).parent
    for name in ("stage2_init.sh", "stage3_init.sh"):
        source = (here / name).read_text("utf-8")
        assert "#@include cmdline_arg.sh\n" in source and "arg() {" not in source
        assert initscript.shipped(name) == source.replace("#@include cmdline_arg.sh\n", FRAGMENT)


def test_a_file_missing_from_the_install_is_named() -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such_init\.sh"):
        initscript.shipped("no_such_init.sh")
