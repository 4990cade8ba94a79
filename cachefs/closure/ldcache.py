"""Reading /etc/ld.so.cache the way glibc's ld.so does (elf/dl-cache.c).

Formats: the new "glibc-ld.so.cache1.1" alone (what ldconfig writes since glibc
2.32), or after an old "ld.so-1.7.0" table (the new one then starts at the next
8-byte boundary). String offsets of new-format entries count from the start of
the new header. An entry is ``(flags, key, value, osversion, hwcap)``: flags give
the ELF class and arch (0x0303 = libc6 x86-64), key the soname, value the path.

Selection follows ``search_cache``: among entries of the same name, in file
order (ldconfig lists glibc-hwcaps entries first), a glibc-hwcaps entry wins if
its subdirectory is supported by this CPU, the earliest in priority order; the
first acceptable legacy entry is used only when no hwcaps entry was.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cachefs.closure.elf import ELFCLASS32, ELFCLASS64

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
EXTENSION_MAGIC = 0xEAA42174
EXTENSION_TAG_GLIBC_HWCAPS = 1
HWCAP_EXTENSION = 1 << 62
_HWCAP_TLS = 1 << 63
# Legacy entries whose hwcap is only these bits are usable by any x86 CPU; ld.so
# excludes others unless AT_HWCAP has them (glibc 2.36: x86 sets none ldconfig uses).
_PLATFORM_BITS = 0xFF << 48

# elf/ldconfig.h flag values: the ELF "type" in the low byte, the arch above.
FLAG_ELF_LIBC6 = 0x0003
FLAG_X8664_LIB64 = 0x0300
FLAG_AARCH64_LIB64 = 0x0A00

# (ELF class, e_machine) -> the flags ld.so of that ABI accepts (_dl_cache_check_flags).
ACCEPTED_FLAGS: Mapping[tuple[int, int], frozenset[int]] = {
    (ELFCLASS64, 62): frozenset({FLAG_ELF_LIBC6 | FLAG_X8664_LIB64}),  # EM_X86_64
    (ELFCLASS64, 183): frozenset({FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64}),  # EM_AARCH64
    (ELFCLASS32, 3): frozenset({1, FLAG_ELF_LIBC6}),  # EM_386
}

_NEW_HEADER = struct.Struct("<20sIIB3xI12x")  # magic+version, nlibs, len_strings, endian, ext
_NEW_ENTRY = struct.Struct("<iIIIQ")
_BIG_ENDIAN = 3  # the header's endianness byte: 0 unset, 2 little, 3 big
_OLD_ENTRY_SIZE = 12


@dataclass(frozen=True)
class CacheEntry:
    flags: int
    name: str
    path: str
    osversion: int
    hwcap: int

    @property
    def hwcaps_index(self) -> int | None:
        """The glibc-hwcaps subdirectory index of an extension entry, else None."""
        if self.hwcap >> 32 == HWCAP_EXTENSION >> 32:
            return self.hwcap & 0xFFFFFFFF
        return None


@dataclass(frozen=True)
class LdCache:
    """A parsed ld.so.cache: every entry in file order and the hwcaps subdir names."""

    entries: tuple[CacheEntry, ...]
    hwcaps_subdirs: tuple[str, ...] = ()
    _by_name: dict[str, list[CacheEntry]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            self._by_name.setdefault(entry.name, []).append(entry)

    def lookup(
        self, name: str, accepted_flags: frozenset[int], hwcaps_priority: Sequence[str]
    ) -> str | None:
        """The path ld.so would take from the cache for soname ``name``, or None.

        ``hwcaps_priority`` lists the glibc-hwcaps subdirectories the CPU supports,
        best first (e.g. ``("x86-64-v3", "x86-64-v2")``).
        """
        best: str | None = None
        best_rank = len(hwcaps_priority)
        for entry in self._by_name.get(name, ()):
            if entry.flags not in accepted_flags:
                continue
            index = entry.hwcaps_index
            if index is None:
                if best is not None:
                    break  # hwcaps entries come first; a named one already won
                if entry.hwcap & ~(_HWCAP_TLS | _PLATFORM_BITS):
                    continue
                return entry.path
            subdir = self.hwcaps_subdirs[index] if index < len(self.hwcaps_subdirs) else None
            if subdir in hwcaps_priority:
                rank = hwcaps_priority.index(subdir)
                if best is None or rank < best_rank:
                    best, best_rank = entry.path, rank
        return best


def load(path: str = "/etc/ld.so.cache") -> LdCache:
    """Parse the cache file at ``path``; an absent or unreadable file is an empty cache,
    as for ld.so (which then searches the default directories)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return LdCache(())
    return parse(data)


def parse(data: bytes) -> LdCache:
    """Parse cache bytes; an unknown or corrupt format is an empty cache (ld.so ignores it)."""
    start = 0
    if data.startswith(OLD_MAGIC):
        if len(data) < 16:
            return LdCache(())
        (nlibs,) = struct.unpack_from("<I", data, 12)
        start = (16 + nlibs * _OLD_ENTRY_SIZE + 7) & ~7
        if not data.startswith(NEW_MAGIC, start):
            # Old-only caches (glibc < 2.2) are not read: no current system writes one.
            return LdCache(())
    elif not data.startswith(NEW_MAGIC):
        return LdCache(())
    if len(data) < start + _NEW_HEADER.size:
        return LdCache(())
    _, nlibs, _, endian, ext_offset = _NEW_HEADER.unpack_from(data, start)
    if endian == _BIG_ENDIAN:
        return LdCache(())  # written for another host; ld.so would ignore it too
    table = start + _NEW_HEADER.size
    if (len(data) - table) // _NEW_ENTRY.size < nlibs:
        return LdCache(())
    strings = _Strings(data, start)
    entries = []
    for i in range(nlibs):
        flags, key, value, osversion, hwcap = _NEW_ENTRY.unpack_from(
            data, table + i * _NEW_ENTRY.size
        )
        name, path = strings.get(key), strings.get(value)
        if name is None or path is None:
            continue
        entries.append(CacheEntry(flags, name, path, osversion, hwcap))
    return LdCache(tuple(entries), _hwcaps_subdirs(data, start, ext_offset, strings))


def _hwcaps_subdirs(data: bytes, start: int, ext_offset: int, strings: _Strings) -> tuple[str, ...]:
    base = start + ext_offset
    if ext_offset == 0 or len(data) < base + 8:
        return ()
    magic, count = struct.unpack_from("<II", data, base)
    if magic != EXTENSION_MAGIC:
        return ()
    for i in range(count):
        at = base + 8 + 16 * i
        if len(data) < at + 16:
            break
        tag, _, offset, size = struct.unpack_from("<IIII", data, at)
        if tag != EXTENSION_TAG_GLIBC_HWCAPS or len(data) < start + offset + size:
            continue
        offsets = struct.unpack_from(f"<{size // 4}I", data, start + offset)
        return tuple(strings.get(o) or "" for o in offsets)
    return ()


class _Strings:
    def __init__(self, data: bytes, base: int) -> None:
        self._data = data
        self._base = base
        self._seen: dict[int, str] = {}

    def get(self, offset: int) -> str | None:
        found = self._seen.get(offset)
        if found is not None:
            return found
        at = self._base + offset
        stop = self._data.find(b"\0", at)
        if at >= len(self._data) or stop < 0:
            return None
        text = self._data[at:stop].decode("utf-8", "surrogateescape")
        self._seen[offset] = text
        return text
