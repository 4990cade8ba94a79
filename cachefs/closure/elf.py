"""What the dynamic loader reads from an ELF file: class, machine, PT_INTERP and the
dynamic section (DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_FLAGS_1).

The header and program headers are read with ``struct`` and ``os.pread``, not by
walking pyelftools' object model: pyelftools took 5.7 ms per libc against 0.05 ms
here, and a closure reads hundreds of files (the benchmark has to beat ``ldd``).
pyelftools still names machines in messages (:func:`machine_name`).

Like ld.so, the dynamic section is found through PT_DYNAMIC (section headers may
be stripped) and DT_STRTAB's address is mapped to a file offset through PT_LOAD.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from elftools.elf.descriptions import describe_e_machine
from elftools.elf.enums import ENUM_E_MACHINE

from cachefs.errors import BadObjectError

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_EXEC, ET_DYN = 2, 3
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH = 0, 1, 5, 10, 14, 15
DT_RUNPATH, DT_FLAGS_1 = 29, 0x6FFFFFFB
DF_1_NODEFLIB = 0x800

# (header, program header) layouts after e_ident, per class; '<' or '>' prefixed later.
_EHDR = {ELFCLASS32: "HHIIIIIHHHHHH", ELFCLASS64: "HHIQQQIHHHHHH"}
_PHDR = {ELFCLASS32: ("IIIIIIII", 32), ELFCLASS64: ("IIQQQQQQ", 56)}
_DYN = {ELFCLASS32: ("ii", 8), ELFCLASS64: ("qQ", 16)}
# Larger than any sane dynamic section or string table; a bound against garbage sizes.
_MAX_READ = 64 << 20


@dataclass(frozen=True)
class ElfInfo:
    """The loader-relevant facts of one ELF file.

    ``rpath`` is None when the file has no DT_RPATH, and also when it has a
    DT_RUNPATH: ld.so ignores DT_RPATH then (elf/get-dynamic-info.h), so callers
    never have to. Paths are the raw strings, before $ORIGIN expansion.
    """

    elf_class: int
    byteorder: int
    machine: int
    elf_type: int
    interp: str | None
    needed: tuple[str, ...]
    rpath: str | None
    runpath: str | None
    soname: str | None
    nodeflib: bool

    @property
    def bits(self) -> int:
        return 32 if self.elf_class == ELFCLASS32 else 64

    def compatible(self, other: ElfInfo) -> bool:
        """True if ld.so loading ``self`` would accept ``other`` as a library."""
        return (
            other.elf_class == self.elf_class
            and other.byteorder == self.byteorder
            and other.machine == self.machine
        )


def machine_name(machine: int) -> str:
    """A human name for an e_machine value ("Advanced Micro Devices X86-64")."""
    for name, value in ENUM_E_MACHINE.items():
        if value == machine and name != "_default_":
            return str(describe_e_machine(name))
    return f"machine {machine}"


def read_elf(path: str) -> ElfInfo | None:
    """Read ``path``; None if it is not an ELF file (no magic, or shorter than one).

    Raises BadObjectError for an ELF file that cannot be parsed (truncated
    headers, a dynamic section pointing outside the file) and OSError when the
    file cannot be opened or read (the caller decides whether that is fatal).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _read_fd(fd, path)
    finally:
        os.close(fd)


def _read_fd(fd: int, path: str) -> ElfInfo | None:
    ident = os.pread(fd, 64, 0)
    if len(ident) < 16 or ident[:4] != ELFMAG:
        return None
    elf_class, data = ident[4], ident[5]
    if elf_class not in _EHDR or data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise BadObjectError(path, f"unknown ELF class {elf_class} or data encoding {data}")
    end = "<" if data == ELFDATA2LSB else ">"
    ehdr = struct.Struct(end + _EHDR[elf_class])
    if len(ident) < 16 + ehdr.size:
        raise BadObjectError(path, "file too short for an ELF header")
    (e_type, e_machine, _, _, e_phoff, _, _, _, e_phentsize, e_phnum, *_) = ehdr.unpack_from(
        ident, 16
    )
    phfmt, phsize = _PHDR[elf_class]
    phdr = struct.Struct(end + phfmt)
    if e_phnum and e_phentsize < phsize:
        raise BadObjectError(path, f"program header entry size {e_phentsize} is too small")
    table = os.pread(fd, e_phentsize * e_phnum, e_phoff) if e_phnum else b""
    if len(table) < e_phentsize * e_phnum:
        raise BadObjectError(path, "program headers run past the end of the file")
    loads: list[tuple[int, int, int]] = []
    interp: str | None = None
    dynamic: tuple[int, int] | None = None
    for i in range(e_phnum):
        fields = phdr.unpack_from(table, i * e_phentsize)
        if elf_class == ELFCLASS64:
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = fields
        else:
            p_type, p_offset, p_vaddr, _, p_filesz, _, _, _ = fields
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_INTERP:
            raw = _pread_exact(fd, path, min(p_filesz, 4096), p_offset)
            interp = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    tags = _dynamic_tags(fd, path, elf_class, end, dynamic)
    strings = _string_reader(fd, path, tags, loads)
    needed = tuple(strings(v) for t, v in tags if t == DT_NEEDED)
    single = {t: v for t, v in tags if t in (DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS_1)}
    runpath = strings(single[DT_RUNPATH]) if DT_RUNPATH in single else None
    rpath = strings(single[DT_RPATH]) if DT_RPATH in single and runpath is None else None
    return ElfInfo(
        elf_class=elf_class,
        byteorder=data,
        machine=e_machine,
        elf_type=e_type,
        interp=interp,
        needed=needed,
        rpath=rpath,
        runpath=runpath,
        soname=strings(single[DT_SONAME]) if DT_SONAME in single else None,
        nodeflib=bool(single.get(DT_FLAGS_1, 0) & DF_1_NODEFLIB),
    )


def _pread_exact(fd: int, path: str, size: int, offset: int) -> bytes:
    if size > _MAX_READ:
        raise BadObjectError(path, f"a segment of {size} bytes is implausibly large")
    data = os.pread(fd, size, offset)
    if len(data) < size:
        raise BadObjectError(path, f"truncated: {size} bytes at offset {offset} run past the end")
    return data


def _dynamic_tags(
    fd: int, path: str, elf_class: int, end: str, dynamic: tuple[int, int] | None
) -> list[tuple[int, int]]:
    if dynamic is None:
        return []
    fmt, size = _DYN[elf_class]
    raw = _pread_exact(fd, path, dynamic[1], dynamic[0])
    tags = []
    for tag, value in struct.iter_unpack(end + fmt, raw[: len(raw) - len(raw) % size]):
        if tag == DT_NULL:
            break
        tags.append((tag, value))
    return tags


def _string_reader(
    fd: int, path: str, tags: list[tuple[int, int]], loads: list[tuple[int, int, int]]
) -> _Strings:
    strtab = next((v for t, v in tags if t == DT_STRTAB), None)
    strsz = next((v for t, v in tags if t == DT_STRSZ), 0)
    if strtab is None:
        return _Strings(b"", path)
    for vaddr, offset, filesz in loads:
        if vaddr <= strtab < vaddr + filesz:
            return _Strings(_pread_exact(fd, path, strsz, strtab - vaddr + offset), path)
    raise BadObjectError(path, f"DT_STRTAB address {strtab:#x} is in no PT_LOAD segment")


class _Strings:
    """NUL-terminated strings of a DT_STRTAB, by offset."""

    def __init__(self, table: bytes, path: str) -> None:
        self._table = table
        self._path = path

    def __call__(self, offset: int) -> str:
        if not 0 <= offset < len(self._table):
            raise BadObjectError(self._path, f"string offset {offset} outside DT_STRTAB")
        stop = self._table.find(b"\0", offset)
        raw = self._table[offset : stop if stop >= 0 else len(self._table)]
        return raw.decode("utf-8", "surrogateescape")
