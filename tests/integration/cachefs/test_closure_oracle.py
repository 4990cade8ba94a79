"""The resolver against the real loader.

The oracle is glibc's own ld.so in ``--list`` mode (and, for the fixtures, the
programs run for real), used only here. Real binaries of this machine, then
programs built with gcc in temporary directories for each search rule.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cachefs.closure import Closure, resolve
from cachefs.closure.elf import read_elf
from cachefs.closure.host import detect
from cachefs.closure.session import Session
from cachefs.errors import MissingLibrariesError
from cachefs.manifest import check_path

RTLD = "/lib64/ld-linux-x86-64.so.2"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"}
PROGRAMS = [
    "ls", "bash", "python3", "gcc", "git", "curl", "ssh", "tar", "gzip", "perl", "openssl",
    "cp", "grep", "sed", "find", "make", "xz", "bzip2", "zstd", "sqlite3", "wget", "file",
    "less", "awk", "readelf", "objdump", "as", "ld", "g++", "diff", "sort", "dpkg", "apt",
    "gdb", "tmux", "jq", "ip", "useradd",
]  # fmt: skip

pytestmark = pytest.mark.skipif(not os.path.exists(RTLD), reason="needs x86-64 glibc ld.so")


def oracle(program: str, env: dict[str, str] | None = None) -> tuple[set[str], set[str]]:
    """(paths ld.so opens, names it did not find) for ``program``.

    ld.so is given the physical path: run by the kernel, $ORIGIN comes from
    /proc/self/exe, which is physical; run as ``ld.so PATH`` it comes from PATH
    as written.
    """
    real = os.path.realpath(program)
    # LD_TRACE_LOADED_OBJECTS (what --list sets) reports every library not found,
    # where --list alone stops at the first.
    trace = {**(env or {}), "LD_TRACE_LOADED_OBJECTS": "1"}
    done = subprocess.run([RTLD, real], capture_output=True, text=True, env=trace, check=False)
    opened, missing = {real}, set()
    for line in done.stdout.splitlines():
        if m := re.match(r"\s*(\S+) => not found", line):
            missing.add(m.group(1))
        elif m := re.match(r"\s*(\S+) => (/\S+) \(", line):
            opened.add(m.group(2))
        elif m := re.match(r"\s*(/\S+) (?:=> ld.so )?\(", line):
            opened.add(m.group(1))
    return opened, missing


def elf_files(closure: Closure) -> set[str]:
    """The regular ELF files of a closure (its Python sources left out)."""
    found = set()
    for path in closure.paths:
        if os.path.isfile(path) and not os.path.islink(path) and read_elf(path) is not None:
            found.add(path)
    return found


def assert_same_as_loader(closure: Closure, opened: set[str]) -> None:
    assert elf_files(closure) == {os.path.realpath(p) for p in opened}
    for path in closure.paths:  # manifest-ready: normalised, never under a symlink
        assert check_path(path) == path
        assert os.path.realpath(os.path.dirname(path)) == os.path.dirname(path), path
    session = Session()
    for path in opened:  # each path as ld.so names it: every symlink on it is kept
        links, final = session.chain(path)
        assert set(links) | {final} <= set(closure.paths), path


def available_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p, path=ENV["PATH"])]


def test_enough_real_programs_are_checked() -> None:
    assert len(available_programs()) >= 25


@pytest.mark.parametrize("name", available_programs())
def test_real_program_matches_the_loader(name: str) -> None:
    program = shutil.which(name, path=ENV["PATH"])
    assert program is not None
    if os.stat(program).st_mode & 0o6000:
        pytest.skip("setuid/setgid: not run through ld.so --list")
    closure = resolve(name, env=ENV)
    assert closure.root == program
    opened, missing = oracle(program)
    assert not missing
    assert_same_as_loader(closure, opened)


def test_host_configuration_matches_ld_so_help() -> None:
    help_text = subprocess.run([RTLD, "--help"], capture_output=True, text=True).stdout
    system = re.findall(r"^\s+(/\S+) \(system search path\)", help_text, re.M)
    supported = re.findall(r"^\s+(x86-64-v\d) \(supported, searched\)", help_text, re.M)
    config = detect(2, 62)
    assert list(config.system_dirs) == system
    assert list(config.hwcaps) == supported


def test_python_starts_with_what_importtime_reports() -> None:
    python = "/usr/bin/python3"
    closure = resolve(python, env=ENV)
    # -X importtime names every module imported at start; the same interpreter
    # then says where each one lives.
    trace = subprocess.run(
        [python, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, env=ENV
    ).stderr
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S.*)$", trace, re.M)
    assert "encodings" in [n.strip() for n in names]
    where = subprocess.run(
        [python, "-c", _ORIGINS, json.dumps([n.strip() for n in names])],
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    ).stdout
    origins = [p for p in json.loads(where) if p]
    assert origins
    for path in origins:
        assert os.path.realpath(path) in closure.paths, path


_ORIGINS = """
import importlib.util, json, sys
out = []
for name in json.loads(sys.argv[1]):
    spec = importlib.util.find_spec(name)
    out.append(spec.origin if spec and spec.has_location else None)
print(json.dumps(out))
"""


# --- built fixtures ---------------------------------------------------------------


def cc(out: Path, source: str, *flags: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(out.suffix + ".c")
    src.write_text(source)
    cmd = ["gcc", "-o", str(out), str(src), "-Wl,--no-as-needed", *flags]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def lib(out: Path, symbol: str, *flags: str, soname: str | None = None) -> Path:
    return cc(
        out,
        f'const char *{symbol}(void) {{ return "{out}"; }}\n',
        "-shared",
        "-fPIC",
        f"-Wl,-soname,{soname or out.name}",
        *flags,
    )


MAIN = '#include <stdio.h>\nint main(void) { puts("ok"); return 0; }\n'
gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@gcc
def test_rpath_with_origin_and_ld_library_path(tmp_path: Path) -> None:
    lib(tmp_path / "extra/libextra.so", "e")
    lib(tmp_path / "app/lib/liba.so", "a", f"-L{tmp_path}/extra", "-lextra")
    prog = cc(
        tmp_path / "app/bin/prog",
        MAIN,
        f"-L{tmp_path}/app/lib",
        "-la",
        "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../lib",
    )
    env = {**ENV, "LD_LIBRARY_PATH": f"{tmp_path}/extra"}
    closure = resolve(str(prog), env=env)
    opened, missing = oracle(str(prog), env)
    assert not missing and f"{tmp_path}/extra/libextra.so" in opened
    assert_same_as_loader(closure, opened)
    with pytest.raises(MissingLibrariesError) as caught:
        resolve(str(prog), env=ENV)  # without LD_LIBRARY_PATH
    assert caught.value.missing == [("libextra.so", f"{tmp_path}/app/bin/../lib/liba.so")]


@gcc
def test_rpath_is_inherited_but_runpath_is_not(tmp_path: Path) -> None:
    lib(tmp_path / "b/libb.so", "b")
    lib(tmp_path / "a/liba.so", "a", f"-L{tmp_path}/b", "-lb")
    link = [f"-L{tmp_path}/a", "-la", f"-L{tmp_path}/b"]
    dirs = f"{tmp_path}/a:{tmp_path}/b"
    with_rpath = cc(tmp_path / "rp", MAIN, *link, f"-Wl,--disable-new-dtags,-rpath,{dirs}")
    with_runpath = cc(tmp_path / "rup", MAIN, *link, f"-Wl,--enable-new-dtags,-rpath,{dirs}")
    opened, missing = oracle(str(with_rpath))
    assert not missing
    assert_same_as_loader(resolve(str(with_rpath), env=ENV), opened)
    # liba needs libb: only the executable's RUNPATH names its directory.
    _, missing = oracle(str(with_runpath))
    assert missing == {"libb.so"}
    with pytest.raises(MissingLibrariesError) as caught:
        resolve(str(with_runpath), env=ENV)
    assert caught.value.missing == [("libb.so", f"{tmp_path}/a/liba.so")]


@gcc
def test_every_missing_library_is_named(tmp_path: Path) -> None:
    lib(tmp_path / "l/libm1.so", "m1")
    lib(tmp_path / "l/libm2.so", "m2")
    lib(tmp_path / "l/libm3.so", "m3")
    lib(tmp_path / "l/libuser.so", "u", f"-L{tmp_path}/l", "-lm3")
    prog = cc(
        tmp_path / "prog",
        MAIN,
        f"-L{tmp_path}/l",
        "-lm1",
        "-lm2",
        "-luser",
        f"-Wl,-rpath,{tmp_path}/l",
    )
    for name in ("libm1.so", "libm2.so", "libm3.so"):
        (tmp_path / "l" / name).unlink()
    _, oracle_missing = oracle(str(prog))
    with pytest.raises(MissingLibrariesError) as caught:
        resolve(str(prog), env=ENV)
    assert {name for name, _ in caught.value.missing} == oracle_missing
    assert caught.value.missing == [
        ("libm1.so", str(prog)),
        ("libm2.so", str(prog)),
        ("libm3.so", f"{tmp_path}/l/libuser.so"),
    ]
    for name in oracle_missing:
        assert name in str(caught.value)


def build_32bit_decoy(out: Path, soname: str) -> str:
    """A 32-bit shared object: gcc -m32 if gcc-multilib is installed, else by hand."""
    try:
        lib(out, "d", "-m32", soname=soname)
        return "gcc -m32"
    except subprocess.CalledProcessError:
        from tests.unit.cachefs.closure.elfbuild import EM_386, write_elf

        write_elf(out, bits=32, machine=EM_386, soname=soname)
        return "hand-written"


@gcc
def test_32bit_decoy_is_skipped(tmp_path: Path) -> None:
    good = lib(tmp_path / "good/libdup.so", "dup")
    build_32bit_decoy(tmp_path / "decoy/libdup.so", "libdup.so")
    assert read_elf(str(tmp_path / "decoy/libdup.so")).bits == 32  # type: ignore[union-attr]
    prog = cc(
        tmp_path / "prog",
        MAIN,
        f"-L{tmp_path}/good",
        "-ldup",
        f"-Wl,-rpath,{tmp_path}/decoy:{tmp_path}/good",
    )
    closure = resolve(str(prog), env=ENV)
    opened, missing = oracle(str(prog))
    assert not missing and str(good) in opened
    assert_same_as_loader(closure, opened)


@gcc
def test_glibc_hwcaps_subdirectory(tmp_path: Path) -> None:
    plain = lib(tmp_path / "h/libh.so", "h")
    tuned = lib(tmp_path / "h/glibc-hwcaps/x86-64-v2/libh.so", "h", soname="libh.so")
    source = "const char *h(void);\n#include <stdio.h>\nint main(void){puts(h());return 0;}\n"
    prog = cc(tmp_path / "prog", source, f"-L{tmp_path}/h", "-lh", f"-Wl,-rpath,{tmp_path}/h")
    ran = subprocess.run([str(prog)], capture_output=True, text=True, check=True).stdout.strip()
    closure = resolve(str(prog), env=ENV)
    opened, _ = oracle(str(prog))
    assert_same_as_loader(closure, opened)
    picked = str(tuned) if "x86-64-v2" in detect(2, 62).hwcaps else str(plain)
    assert ran == picked and picked in closure.paths


@gcc
def test_symlink_chain_is_kept(tmp_path: Path) -> None:
    lib(tmp_path / "c/libchain.so.1.0", "c", soname="libchain.so.1")
    os.symlink("libchain.so.1.0", tmp_path / "c/libchain.so.1")
    os.symlink("libchain.so.1", tmp_path / "c/libchain.so")
    prog = cc(tmp_path / "prog", MAIN, f"-L{tmp_path}/c", "-lchain", f"-Wl,-rpath,{tmp_path}/c")
    closure = resolve(str(prog), env=ENV)
    opened, _ = oracle(str(prog))
    assert f"{tmp_path}/c/libchain.so.1" in opened
    assert_same_as_loader(closure, opened)
    assert f"{tmp_path}/c/libchain.so.1" in closure.paths  # the link ld.so opens
    assert f"{tmp_path}/c/libchain.so" not in closure.paths  # the link only ld uses


def test_shebang_python_script(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("import json\nVALUE = 42\n")
    script = tmp_path / "run.py"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import sys, json, ssl, helper\n"
        "files = [getattr(m, '__file__', None) for m in list(sys.modules.values())]\n"
        "print(json.dumps([f for f in files if f]))\n"
    )
    script.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin"}
    closure = resolve(str(script), env=env)
    # The oracle: the script run for real lists every module it has loaded.
    loaded = json.loads(
        subprocess.run([str(script)], capture_output=True, text=True, env=env, check=True).stdout
    )
    paths = set(closure.paths)
    assert {"/usr/bin/env", "/usr/bin/python3", str(script)} <= paths
    assert f"{tmp_path}/helper.py" in paths
    for path in loaded:
        assert os.path.realpath(path) in paths, path
    extensions = [p for p in loaded if p.endswith(".so")]
    assert any("_ssl" in p for p in extensions) and any("_json" in p for p in extensions)
    for extension in extensions:  # their own libraries (libssl, libcrypto) too
        opened, missing = oracle(extension)
        assert not missing
        for path in opened:
            assert os.path.realpath(path) in paths, (extension, path)
    cached = importlib.util.cache_from_source("/usr/lib/python3.11/json/__init__.py")
    if os.path.exists(cached):
        assert cached in paths


@gcc
def test_ld_preload_matches_the_loader(tmp_path: Path) -> None:
    dep = lib(tmp_path / "d/libdep.so", "dep")
    pre = lib(
        tmp_path / "p/libpre.so", "pre", f"-L{tmp_path}/d", "-ldep", f"-Wl,-rpath,{dep.parent}"
    )
    prog = shutil.which("true", path=ENV["PATH"])
    assert prog is not None
    env = {**ENV, "LD_PRELOAD": str(pre)}
    opened, missing = oracle(prog, env)
    assert not missing and str(pre) in opened and str(dep) in opened
    assert_same_as_loader(resolve(prog, env=env), opened)


def test_virtual_environment_python_brings_pyvenv_cfg(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    closure = resolve(str(venv / "bin/python"), env=ENV)
    assert str(venv / "pyvenv.cfg") in closure.paths
    assert str(venv / "bin/python") in closure.paths  # the symlink, kept
    assert os.path.realpath(venv / "bin/python") in closure.paths


def test_include_of_a_plugin_is_loaded_into_the_script_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("#!/usr/bin/env python3\nprint('x')\n")
    script.chmod(0o755)
    ssl = "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"
    if not os.path.exists(ssl):
        pytest.skip("no _ssl extension module here")
    closure = resolve(str(script), env={"PATH": "/usr/bin"}, includes=[ssl])
    opened, _ = oracle(ssl)
    for path in opened:
        assert os.path.realpath(path) in closure.paths
    libssl = next(p for p in opened if "libssl" in p)
    # dlopen'ed by python3 (the interpreter that runs), needed by the plugin.
    assert closure.needed_by[os.path.realpath(libssl)] == (os.path.realpath(ssl),)
