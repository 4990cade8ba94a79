"""What this host's ld.so searches: its default directories, glibc-hwcaps and legacy
hwcap subdirectories, and the values of $LIB and $PLATFORM.

These are compiled into ld.so, so they are derived here from the ABI (the ELF
class and machine of the program), the C library's version and the CPU, and
checked against ``ld.so --help`` ("Shared library search path", "Subdirectories
of glibc-hwcaps directories") by the tests. Debian's multiarch layout is
assumed when ld.so lives in a multiarch directory, the FHS lib64 layout otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from cachefs.closure.elf import ELFCLASS32, ELFCLASS64

EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183

# The x86-64 psABI micro-architecture levels, as /proc/cpuinfo flag names
# (sysdeps/x86/get-isa-level.h). Each level needs the previous one's flags too.
_X86_64_LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "x86-64-v2",
        frozenset({"cx16", "lahf_lm", "pni", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
    ),
    (
        "x86-64-v3",
        frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ),
    ("x86-64-v4", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})),
)
_MULTIARCH = {
    (ELFCLASS64, EM_X86_64): "x86_64-linux-gnu",
    (ELFCLASS64, EM_AARCH64): "aarch64-linux-gnu",
    (ELFCLASS32, EM_386): "i386-linux-gnu",
}
_PLATFORM = {
    (ELFCLASS64, EM_X86_64): "x86_64",
    (ELFCLASS64, EM_AARCH64): "aarch64",
    (ELFCLASS32, EM_386): "i686",
}


@dataclass(frozen=True)
class LoaderConfig:
    """How one ld.so searches. Every path search (RPATH, LD_LIBRARY_PATH, RUNPATH,
    default dirs) tries, in each directory, ``subdirs`` in order and then the
    directory itself; the cache lookup uses ``hwcaps`` for its hwcaps entries."""

    system_dirs: tuple[str, ...]
    hwcaps: tuple[str, ...]
    legacy_subdirs: tuple[str, ...]
    lib: str
    platform: str

    @property
    def subdirs(self) -> tuple[str, ...]:
        return tuple(f"glibc-hwcaps/{h}" for h in self.hwcaps) + self.legacy_subdirs


def glibc_version() -> tuple[int, int]:
    """This process's glibc version, (2, 36); (0, 0) if not glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        text = ""
    name, _, number = text.partition(" ")
    if name != "glibc":
        return (0, 0)
    major, _, minor = number.partition(".")
    return (int(major), int(minor.split(".")[0]))


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's flags from /proc/cpuinfo (empty if unreadable)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def x86_64_levels(flags: Iterable[str]) -> tuple[str, ...]:
    """The glibc-hwcaps subdirectories a CPU with ``flags`` supports, best first."""
    have = set(flags)
    supported: list[str] = []
    for name, needs in _X86_64_LEVELS:
        if not needs <= have:
            break
        supported.append(name)
    return tuple(reversed(supported))


def legacy_subdirs(caps: list[str]) -> tuple[str, ...]:
    """glibc < 2.37's legacy hwcap subdirectories: every subset of ``caps`` (in order,
    as path components), most components first in ld.so's order; "" (the directory
    itself) is left to the caller."""
    count = len(caps)
    subdirs = []
    for mask in range((1 << count) - 1, 0, -1):
        subdirs.append("/".join(c for i, c in enumerate(caps) if mask & (1 << (count - 1 - i))))
    return tuple(subdirs)


def detect(
    elf_class: int,
    machine: int,
    *,
    version: tuple[int, int] | None = None,
    flags: frozenset[str] | None = None,
) -> LoaderConfig:
    """The search configuration of the ld.so that loads a program of this ABI here.

    The directory layout is read from the host (Debian multiarch or lib64).
    Before glibc 2.33 (no glibc-hwcaps, other legacy
    platforms) only the directories themselves are searched: not modelled."""
    version = glibc_version() if version is None else version
    key = (elf_class, machine)
    triplet = _MULTIARCH.get(key)
    multiarch = triplet is not None and (
        os.path.isdir(f"/usr/lib/{triplet}") or os.path.isdir(f"/lib/{triplet}")
    )
    if multiarch and triplet is not None:
        dirs: tuple[str, ...] = (f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib")
        lib = f"lib/{triplet}"
    elif elf_class == ELFCLASS64:
        dirs, lib = ("/lib64", "/usr/lib64"), "lib64"
    else:
        dirs, lib = ("/lib", "/usr/lib"), "lib"
    platform = _PLATFORM.get(key, os.uname().machine)
    hwcaps: tuple[str, ...] = ()
    if key == (ELFCLASS64, EM_X86_64) and version >= (2, 33):  # glibc-hwcaps came in 2.33
        hwcaps = x86_64_levels(cpu_flags() if flags is None else flags)
    legacy: tuple[str, ...] = ()
    if (2, 33) <= version < (2, 37) and key == (ELFCLASS64, EM_X86_64):
        # glibc 2.33-2.36 on x86-64: "tls", then AT_PLATFORM, then the "x86_64"
        # hwcap bit; removed in 2.37. (avx512_1 is only set with AVX512; not modelled.)
        legacy = legacy_subdirs(["tls", platform, "x86_64"])
    return LoaderConfig(dirs, hwcaps, legacy, lib, platform)
