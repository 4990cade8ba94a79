"""ld.so's search order, on a fake tree (tests.unit.cachefs.closure.world): each test
puts copies of a library where two rules compete and checks which one wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cachefs.closure.search import expand, split_path
from cachefs.errors import BadObjectError, MissingLibrariesError
from tests.unit.cachefs.closure.elfbuild import EM_386, EM_AARCH64
from tests.unit.cachefs.closure.world import World, files


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_rpath_then_library_path_then_cache_then_default_dirs(world: World) -> None:
    r = world.root
    prog = world.prog("bin/prog", needed=("libx.so.1",), rpath=str(r / "R"))
    copies = [world.lib(f"{d}/libx.so.1") for d in ("R", "E", "C", "sys")]
    world.cache("libx.so.1", copies[2])
    env = {"LD_LIBRARY_PATH": str(r / "E")}
    for expected in copies:
        assert str(expected) in files(world.resolve(prog, env))
        assert not files(world.resolve(prog, env)) & {str(c) for c in copies if c != expected}
        expected.unlink()
    with pytest.raises(MissingLibrariesError):
        world.resolve(prog, env)


def test_library_path_before_runpath_before_cache(world: World) -> None:
    r = world.root
    prog = world.prog("bin/prog", needed=("libx.so.1",), runpath=str(r / "U"))
    in_env, in_runpath, in_cache = (world.lib(f"{d}/libx.so.1") for d in ("E", "U", "C"))
    world.cache("libx.so.1", in_cache)
    env = {"LD_LIBRARY_PATH": str(r / "E")}
    assert str(in_env) in files(world.resolve(prog, env))
    in_env.unlink()
    assert str(in_runpath) in files(world.resolve(prog, env))
    in_runpath.unlink()
    assert str(in_cache) in files(world.resolve(prog, env))


def test_rpath_is_inherited_from_the_loaders(world: World) -> None:
    r = world.root
    prog = world.prog("bin/prog", needed=("liba.so",), rpath=str(r / "R"))
    world.lib("R/liba.so", needed=("libb.so",))  # no RPATH of its own
    libb = world.lib("R/libb.so")
    assert str(libb) in files(world.resolve(prog))
    assert world.resolve(prog).needed_by[str(libb)] == (str(r / "R/liba.so"),)


def test_runpath_is_not_inherited_and_disables_rpath(world: World) -> None:
    r = world.root
    prog = world.prog("bin/prog", needed=("liba.so",), runpath=str(r / "U"))
    world.lib("U/liba.so", needed=("libb.so",))
    world.lib("U/libb.so")  # only reachable through the executable's RUNPATH
    with pytest.raises(MissingLibrariesError) as caught:
        world.resolve(prog)
    assert caught.value.missing == [("libb.so", str(r / "U/liba.so"))]
    # An object with RUNPATH gets no RPATH from its loaders either.
    prog2 = world.prog("bin/prog2", needed=("libc2.so",), rpath=str(r / "R"))
    world.lib("R/libc2.so", needed=("libd.so",), runpath=str(r / "nowhere"))
    world.lib("R/libd.so")
    with pytest.raises(MissingLibrariesError) as caught:
        world.resolve(prog2)
    assert caught.value.missing == [("libd.so", str(r / "R/libc2.so"))]


@pytest.mark.parametrize(
    "decoy", [{"bits": 32, "machine": EM_386}, {"machine": EM_AARCH64}], ids=["32bit", "aarch64"]
)
def test_library_of_another_class_or_machine_is_skipped(
    world: World, decoy: dict[str, int]
) -> None:
    prog = world.prog("bin/prog", needed=("libx.so.1",), rpath=str(world.root / "R"))
    world.lib("R/libx.so.1", **decoy)  # type: ignore[arg-type]
    right = world.lib("sys/libx.so.1")
    assert files(world.resolve(prog)) == {str(prog), str(world.rtld), str(right)}


def test_glibc_hwcaps_subdirectory_wins_when_supported(world: World) -> None:
    r = world.root
    prog = world.prog("bin/prog", needed=("libx.so",), rpath=str(r / "R"))
    plain = world.lib("R/libx.so")
    world.lib("R/glibc-hwcaps/x86-64-v4/libx.so")  # v4 not in the config: never used
    assert str(plain) in files(world.resolve(prog))
    v2 = world.lib("R/glibc-hwcaps/x86-64-v2/libx.so")
    assert str(v2) in files(world.resolve(prog))
    v3 = world.lib("R/glibc-hwcaps/x86-64-v3/libx.so")
    assert files(world.resolve(prog)) == {str(prog), str(world.rtld), str(v3)}


def test_origin_lib_and_platform_are_expanded(world: World) -> None:
    cfg = world.config
    assert expand("$ORIGIN/../lib", "/opt/app/bin", cfg) == "/opt/app/bin/../lib"
    assert expand("${ORIGIN}/x:$LIB/$PLATFORM", "/o", cfg) == "/o/x:lib64t/x86_64"
    assert expand("${LIB}", None, cfg) == "lib64t"
    assert expand("$ORIGINAL/$LIBS", "/o", cfg) == "$ORIGINAL/$LIBS"  # not tokens
    assert expand("$ORIGIN/x", None, cfg) is None
    # An empty element is the working directory; ';' also separates LD_LIBRARY_PATH.
    assert split_path("/a/:;$ORIGIN", "/o", cfg, "/cwd", seps=":;") == ["/a", "/cwd/.", "/o"]
    r = world.root
    prog = world.prog("bin/prog", needed=("libx.so",), rpath="$ORIGIN/../${LIB}/$PLATFORM")
    lib = world.lib("lib64t/x86_64/libx.so")
    closure = world.resolve(prog)
    assert os.path.realpath(lib) in {os.path.realpath(p) for p in files(closure)}
    assert str(r / "bin") != str(lib.parent)


def test_library_path_comes_from_env_argument_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    prog = world.prog("bin/prog", needed=("libx.so",))
    world.lib("E/libx.so")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(world.root / "E"))
    with pytest.raises(MissingLibrariesError):
        world.resolve(prog, {"PATH": "/nonexistent"})
    # An empty LD_LIBRARY_PATH element means the working directory.
    closure = world.resolve(prog, {"LD_LIBRARY_PATH": ":"}, cwd=world.root / "E")
    assert any(p.endswith("/E/libx.so") for p in files(closure))


def test_nodeflib_skips_cache_and_default_dirs(world: World) -> None:
    prog = world.prog("bin/prog", needed=("libx.so",), nodeflib=True)
    world.cache("libx.so", world.lib("C/libx.so"))
    world.lib("sys/libx.so")
    with pytest.raises(MissingLibrariesError):
        world.resolve(prog)


def test_loaded_soname_is_not_searched_again(world: World) -> None:
    r = world.root
    # Breadth first: liba's dependency libx is loaded from R (the executable's RPATH)
    # before libb asks for it, so libb's RUNPATH copy is never used.
    prog = world.prog("bin/prog", needed=("liba.so", "libb.so"), rpath=str(r / "R"))
    world.lib("R/liba.so", needed=("libx.so.1",))
    world.lib("R/libb.so", needed=("libx.so.1", "libfoo.so.2"), runpath=str(r / "B"))
    from_r = world.lib("R/libx.so.1")
    from_b = world.lib("B/libx.so.1")
    # The executable's "libfoo.so" has soname libfoo.so.2: libb's request matches it.
    prog2_foo = world.lib("R/libfoo.so", soname="libfoo.so.2")
    world.lib("B/libfoo.so.2")
    prog = world.prog("bin/prog", needed=("liba.so", "libb.so", "libfoo.so"), rpath=str(r / "R"))
    closure = world.resolve(prog)
    assert str(from_r) in files(closure) and str(from_b) not in files(closure)
    assert str(prog2_foo) in files(closure)
    assert not any(p.startswith(str(r / "B")) for p in closure.paths)
    assert set(closure.needed_by[str(from_r)]) == {str(r / "R/liba.so"), str(r / "R/libb.so")}


def test_every_missing_library_is_reported_with_who_needed_it(world: World) -> None:
    r = world.root
    prog = world.prog("bin/prog", needed=("liba.so", "libnope1.so"), rpath=str(r / "R"))
    world.lib("R/liba.so", needed=("libnope2.so", "libnope1.so"))
    with pytest.raises(MissingLibrariesError) as caught:
        world.resolve(prog)
    assert caught.value.missing == [
        ("libnope1.so", str(prog)),
        ("libnope2.so", str(r / "R/liba.so")),
        ("libnope1.so", str(r / "R/liba.so")),
    ]
    assert "libnope2.so (needed by" in str(caught.value)


def test_a_non_elf_file_in_the_way_stops_the_search(world: World) -> None:
    prog = world.prog("bin/prog", needed=("libx.so",), rpath=str(world.root / "R"))
    (world.root / "R").mkdir()
    (world.root / "R/libx.so").write_text("INPUT(-lx)\n")  # a linker script
    world.lib("sys/libx.so")
    with pytest.raises(BadObjectError) as caught:
        world.resolve(prog)
    assert caught.value.path == str(world.root / "R/libx.so")


def test_needed_name_with_a_slash_is_a_path(world: World) -> None:
    lib = world.lib("sub/libq.so")
    prog = world.prog("bin/prog", needed=("sub/libq.so",))
    assert str(lib) in files(world.resolve(prog, cwd=world.root))
    with pytest.raises(MissingLibrariesError):
        world.resolve(prog, cwd=world.root / "bin")


def test_origin_in_a_needed_name(world: World) -> None:
    lib = world.lib("bin/plug/libp.so")
    prog = world.prog("bin/prog", needed=("$ORIGIN/plug/libp.so",))
    assert str(lib) in files(world.resolve(prog))


def test_ld_preload_is_loaded_first_and_satisfies_later_names(world: World) -> None:
    r = world.root
    prog = world.prog("bin/prog", needed=("libx.so.1",))
    preloaded = world.lib("P/libx-debug.so", soname="libx.so.1")
    regular = world.lib("sys/libx.so.1")
    env = {"LD_PRELOAD": f"{preloaded} libabsent.so"}  # an absent preload is only a warning
    closure = world.resolve(prog, env)
    assert str(preloaded) in files(closure) and str(regular) not in files(closure)
    assert f"{r}/P" not in closure.paths


def test_setuid_program_ignores_ld_library_path(world: World) -> None:
    prog = world.prog("bin/prog", needed=("libx.so",))
    world.lib("E/libx.so")
    env = {"LD_LIBRARY_PATH": str(world.root / "E")}
    assert files(world.resolve(prog, env))
    prog.chmod(0o4755)
    with pytest.raises(MissingLibrariesError):
        world.resolve(prog, env)
