"""Minimal ELF shared objects written byte by byte, for tests that need many small
libraries (or a 32-bit one) without a compiler.

The file is one PT_LOAD at address 0 covering everything, a PT_DYNAMIC, an
optional PT_INTERP, and the string table. Enough for ld.so's open_verify and for
:mod:`cachefs.closure.elf`; not enough to run.
"""

from __future__ import annotations

import struct
from pathlib import Path

EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183
DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 1, 5, 10, 14, 15, 29
DT_FLAGS_1, DF_1_NODEFLIB = 0x6FFFFFFB, 0x800


def build_elf(
    *,
    bits: int = 64,
    machine: int = EM_X86_64,
    elf_type: int = 3,
    soname: str | None = None,
    needed: tuple[str, ...] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    interp: str | None = None,
    nodeflib: bool = False,
) -> bytes:
    strings = bytearray(b"\0")

    def add(text: str) -> int:
        offset = len(strings)
        strings.extend(text.encode() + b"\0")
        return offset

    tags = [(DT_NEEDED, add(n)) for n in needed]
    if soname is not None:
        tags.append((DT_SONAME, add(soname)))
    if rpath is not None:
        tags.append((DT_RPATH, add(rpath)))
    if runpath is not None:
        tags.append((DT_RUNPATH, add(runpath)))
    if nodeflib:
        tags.append((DT_FLAGS_1, DF_1_NODEFLIB))
    wide = bits == 64
    ehsize, phentsize = (64, 56) if wide else (52, 32)
    phnum = 3 if interp is not None else 2
    interp_bytes = (interp.encode() + b"\0") if interp is not None else b""
    interp_off = ehsize + phnum * phentsize
    strtab_off = interp_off + len(interp_bytes)
    dyn_off = (strtab_off + len(strings) + 7) & ~7
    tags += [(DT_STRTAB, strtab_off), (DT_STRSZ, len(strings)), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ" if wide else "<iI", t, v) for t, v in tags)
    size = dyn_off + len(dynamic)

    def phdr(p_type: int, offset: int, filesz: int) -> bytes:
        if wide:
            return struct.pack("<IIQQQQQQ", p_type, 4, offset, offset, offset, filesz, filesz, 8)
        return struct.pack("<IIIIIIII", p_type, offset, offset, offset, filesz, filesz, 4, 4)

    phdrs = phdr(1, 0, size) + phdr(2, dyn_off, len(dynamic))
    if interp is not None:
        phdrs += phdr(3, interp_off, len(interp_bytes))
    ident = b"\x7fELF" + bytes([2 if wide else 1, 1, 1, 0]) + bytes(8)
    if wide:
        header = struct.pack(
            "<HHIQQQIHHHHHH", elf_type, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, phnum,
            64, 0, 0,
        )  # fmt: skip
    else:
        header = struct.pack(
            "<HHIIIIIHHHHHH", elf_type, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, phnum,
            40, 0, 0,
        )  # fmt: skip
    body = ident + header + phdrs + interp_bytes + bytes(strings)
    return body + bytes(dyn_off - len(body)) + dynamic


def write_elf(path: Path, **kwargs: object) -> Path:
    """Write ``build_elf(**kwargs)`` to ``path`` (parents created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_elf(**kwargs))  # type: ignore[arg-type]
    return path
