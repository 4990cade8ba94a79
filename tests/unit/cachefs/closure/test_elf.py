"""Reading the loader's facts from ELF files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachefs.closure.elf import ELFCLASS32, ELFCLASS64, machine_name, read_elf
from cachefs.errors import BadObjectError
from tests.unit.cachefs.closure.elfbuild import EM_386, EM_X86_64, build_elf


def test_dynamic_entries_are_read(tmp_path: Path) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(
        build_elf(soname="libq.so.1", needed=("liba.so", "libb.so.2"), rpath="/r:$ORIGIN")
    )
    info = read_elf(str(path))
    assert info is not None
    assert (info.elf_class, info.machine, info.bits) == (ELFCLASS64, EM_X86_64, 64)
    assert info.needed == ("liba.so", "libb.so.2")
    assert (info.soname, info.rpath, info.runpath) == ("libq.so.1", "/r:$ORIGIN", None)
    assert info.interp is None and not info.nodeflib


def test_rpath_is_dropped_when_runpath_is_present(tmp_path: Path) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(build_elf(rpath="/r", runpath="/u", nodeflib=True, interp="/ld.so"))
    info = read_elf(str(path))
    assert info is not None
    assert (info.rpath, info.runpath, info.nodeflib, info.interp) == (None, "/u", True, "/ld.so")


def test_32_bit_object_and_compatibility(tmp_path: Path) -> None:
    (tmp_path / "32.so").write_bytes(build_elf(bits=32, machine=EM_386, needed=("libc.so.6",)))
    (tmp_path / "64.so").write_bytes(build_elf())
    small, big = read_elf(str(tmp_path / "32.so")), read_elf(str(tmp_path / "64.so"))
    assert small is not None and big is not None
    assert small.elf_class == ELFCLASS32 and small.needed == ("libc.so.6",)
    assert not big.compatible(small) and big.compatible(big)
    assert machine_name(EM_386) == "Intel 80386"


def test_real_executable() -> None:
    info = read_elf("/bin/sh")
    assert info is not None
    assert info.interp is not None and info.interp.endswith("ld-linux-x86-64.so.2")
    assert "libc.so.6" in info.needed


def test_non_elf_is_none_and_damaged_elf_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\n")
    (tmp_path / "empty").write_bytes(b"")
    assert read_elf(str(tmp_path / "script")) is None
    assert read_elf(str(tmp_path / "empty")) is None
    (tmp_path / "cut.so").write_bytes(build_elf(needed=("liba.so",))[:80])
    with pytest.raises(BadObjectError) as caught:
        read_elf(str(tmp_path / "cut.so"))
    assert caught.value.path == str(tmp_path / "cut.so")
    with pytest.raises(FileNotFoundError):
        read_elf(str(tmp_path / "absent"))
