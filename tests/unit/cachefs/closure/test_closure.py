"""resolve(): the program through PATH, symlinks kept, #! interpreters, includes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cachefs.errors import BadObjectError, IncludeNotFoundError, ProgramNotFoundError
from tests.unit.cachefs.closure.world import World, files


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_program_is_found_through_path_and_symlinks_are_kept(world: World) -> None:
    r = world.root
    world.prog("opt/app/bin/tool", needed=("libx.so",))
    real = world.lib("sys/libx.so.1.0")
    os.symlink("libx.so.1.0", r / "sys/libx.so.1")
    os.symlink("libx.so.1", r / "sys/libx.so")
    os.symlink("opt/app/bin", r / "appbin")  # a directory symlink on PATH
    closure = world.resolve("tool", {"PATH": f"{r}/nowhere:{r}/appbin"})
    assert closure.root == f"{r}/appbin/tool"
    assert {f"{r}/appbin", f"{r}/sys/libx.so", f"{r}/sys/libx.so.1"} <= set(closure.paths)
    assert files(closure) == {f"{r}/opt/app/bin/tool", str(real), str(world.rtld)}
    assert list(closure.paths) == sorted(closure.paths)
    assert closure.needed_by[f"{r}/sys/libx.so.1"] == (f"{r}/opt/app/bin/tool",)
    assert closure.needed_by[f"{r}/opt/app/bin/tool"] == ()  # the root: needed by nobody


def test_program_not_found_names_the_directories_searched(world: World) -> None:
    r = world.root
    (r / "bin").mkdir()
    (r / "bin/notexec").write_text("x")
    with pytest.raises(ProgramNotFoundError) as caught:
        world.resolve("notexec", {"PATH": f"{r}/bin:{r}/other"})
    assert caught.value.searched == [f"{r}/bin", f"{r}/other"]
    assert caught.value.program == "notexec"


def test_script_follows_its_interpreters(world: World) -> None:
    r = world.root
    world.prog("bin/env")
    world.prog("tools/interp", needed=("libi.so",))
    libi = world.lib("sys/libi.so")
    script = r / "bin/run"
    script.write_text("#!" + str(r / "bin/env") + " -S interp -x\nbody\n")
    script.chmod(0o755)
    closure = world.resolve("run", {"PATH": f"{r}/bin:{r}/tools"})
    assert files(closure) == {
        str(script),
        f"{r}/bin/env",
        f"{r}/tools/interp",
        str(libi),
        str(world.rtld),
    }
    assert closure.needed_by[f"{r}/tools/interp"] == (str(script),)


def test_a_file_that_is_neither_elf_nor_script_is_refused(world: World) -> None:
    (world.root / "bin").mkdir()
    data = world.root / "bin/data"
    data.write_bytes(b"\0\1\2")
    data.chmod(0o755)
    with pytest.raises(BadObjectError):
        world.resolve("data")


def test_includes_bring_files_directories_and_plugin_libraries(world: World) -> None:
    r = world.root
    prog = world.prog("bin/prog", rpath=str(r / "R"))
    world.lib("plugins/a/libplug.so", needed=("libdep.so",))
    dep = world.lib("R/libdep.so")  # found through the executable's RPATH, as in dlopen
    (r / "share/data/sub").mkdir(parents=True)
    (r / "share/data/sub/x.txt").write_text("x")
    os.symlink("sub/x.txt", r / "share/data/link")
    closure = world.resolve(prog, includes=["plugins/*/lib*.so", str(r / "share/data")])
    assert {f"{r}/plugins/a/libplug.so", str(dep), f"{r}/share/data/sub/x.txt"} <= files(closure)
    assert f"{r}/share/data/link" in closure.paths
    assert closure.needed_by[str(dep)] == (f"{r}/plugins/a/libplug.so",)
    with pytest.raises(IncludeNotFoundError) as caught:
        world.resolve(prog, includes=["plugins/*.none"])
    assert caught.value.pattern == "plugins/*.none"
