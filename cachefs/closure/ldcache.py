"""Reading /etc/ld.so.cache the way glibc's ld.so does (elf/dl-cache.c).

Formats: the new "glibc-ld.so.cache1.1" alone (what ldconfig writes since glibc
2.32), or after an old "ld.so-1.7.0" table (the new one then starts at the next
8-byte boundary). String offsets of new-format entries count from the start of
the new header. An entry is ``(flags, key, value, osversion, hwcap)``: flags give
the ELF class and arch (0x0303 = libc6 x86-64), key the soname, value the path.

Selection follows ``search_cache``: a binary search (the table is sorted with
:func:`libcmp`) finds the first entry of the name; among entries of that name,
in file order (ldconfig lists glibc-hwcaps entries first), a glibc-hwcaps entry wins if
its subdirectory is supported by this CPU, the earliest in priority order; the
first acceptable legacy entry is used only when no hwcaps entry was.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


class LdCache:
    """A mapped ld.so.cache. Looked up by binary search on the entry table, as
    ld.so does, so that a lookup reads a dozen entries and not all of them."""

    def __init__(
        self, data: bytes = b"", start: int = 0, nlibs: int = 0, hwcaps: tuple[str, ...] = ()
    ) -> None:
        self._data = data
        self._table = start + _NEW_HEADER.size
        self._nlibs = nlibs
        self._strings = _Strings(data, start)
        self.hwcaps_subdirs = hwcaps

    @property
    def entries(self) -> tuple[CacheEntry, ...]:
        """Every usable entry, in file order (for listing; lookups do not use this)."""
        found = (self._entry(i) for i in range(self._nlibs))
        return tuple(e for e in found if e is not None)

    def _raw(self, index: int) -> tuple[int, int, int, int, int]:
        at = self._table + index * _NEW_ENTRY.size
        raw: tuple[int, int, int, int, int] = _NEW_ENTRY.unpack_from(self._data, at)
        return raw

    def _entry(self, index: int) -> CacheEntry | None:
        flags, key, value, osversion, hwcap = self._raw(index)
        name, path = self._strings.get(key), self._strings.get(value)
        if name is None or path is None:
            return None
        return CacheEntry(flags, name, path, osversion, hwcap)

    def _first(self, name: str) -> int | None:
        """The index of the first entry named ``name`` (the table is sorted by libcmp)."""
        left, right = 0, self._nlibs - 1
        while left <= right:
            middle = (left + right) // 2
            key = self._strings.get(self._raw(middle)[1])
            if key is None:
                return None
            cmp = libcmp(name, key)
            if cmp == 0:
                while middle > 0 and self._strings.get(self._raw(middle - 1)[1]) == name:
                    middle -= 1
                return middle
            if cmp < 0:
                left = middle + 1
            else:
                right = middle - 1
        return None

    def lookup(
        self, name: str, accepted_flags: frozenset[int], hwcaps_priority: Sequence[str]
    ) -> str | None:
        """The path ld.so would take from the cache for soname ``name``, or None.

        ``hwcaps_priority`` lists the glibc-hwcaps subdirectories the CPU supports,
        best first (e.g. ``("x86-64-v3", "x86-64-v2")``).
        """
        index = self._first(name)
        best: str | None = None
        best_rank = len(hwcaps_priority)
        while index is not None and index < self._nlibs:
            entry = self._entry(index)
            index += 1
            if entry is None or entry.name != name:
                break
            if entry.flags not in accepted_flags:
                continue
            subdir_index = entry.hwcaps_index
            if subdir_index is None:
                if best is not None:
                    break  # hwcaps entries come first; a named one already won
                if entry.hwcap & ~(_HWCAP_TLS | _PLATFORM_BITS):
                    continue
                return entry.path
            subdirs = self.hwcaps_subdirs
            subdir = subdirs[subdir_index] if subdir_index < len(subdirs) else None
            if subdir in hwcaps_priority:
                rank = hwcaps_priority.index(subdir)
                if best is None or rank < best_rank:
                    best, best_rank = entry.path, rank
        return best


def libcmp(left: str, right: str) -> int:
    """glibc's _dl_cache_libcmp: runs of digits compare as numbers ("libx.so.10" after
    "libx.so.9"), a digit sorts after a non-digit. The table is sorted descending."""
    i = j = 0
    while i < len(left):
        a = left[i]
        b = right[j] if j < len(right) else ""
        if a.isdigit():
            if not b.isdigit():
                return 1
            i2, j2 = i, j
            while i2 < len(left) and left[i2].isdigit():
                i2 += 1
            while j2 < len(right) and right[j2].isdigit():
                j2 += 1
            diff = int(left[i:i2]) - int(right[j:j2])
            if diff:
                return diff
            i, j = i2, j2
        elif b.isdigit():
            return -1
        elif a != b:
            return ord(a) - (ord(b) if b else 0)
        else:
            i += 1
            j += 1
    return -1 if j < len(right) else 0


def load(path: str = "/etc/ld.so.cache") -> LdCache:
    """Map the cache file at ``path``; an absent or unreadable file is an empty cache,
    as for ld.so (which then searches the default directories)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return LdCache()
    return parse(data)


def parse(data: bytes) -> LdCache:
    """Read cache bytes; an unknown or corrupt format is an empty cache (ld.so ignores it)."""
    start = 0
    if data.startswith(OLD_MAGIC):
        if len(data) < 16:
            return LdCache()
        (nlibs,) = struct.unpack_from("<I", data, 12)
        start = (16 + nlibs * _OLD_ENTRY_SIZE + 7) & ~7
        if not data.startswith(NEW_MAGIC, start):
            # Old-only caches (glibc < 2.2) are not read: no current system writes one.
            return LdCache()
    elif not data.startswith(NEW_MAGIC):
        return LdCache()
    if len(data) < start + _NEW_HEADER.size:
        return LdCache()
    _, nlibs, _, endian, ext_offset = _NEW_HEADER.unpack_from(data, start)
    if endian == _BIG_ENDIAN:
        return LdCache()  # written for another host; ld.so would ignore it too
    if (len(data) - start - _NEW_HEADER.size) // _NEW_ENTRY.size < nlibs:
        return LdCache()
    hwcaps = _hwcaps_subdirs(data, start, ext_offset, _Strings(data, start))
    return LdCache(data, start, nlibs, hwcaps)


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
