"""Writing small ld.so.cache files (glibc-ld.so.cache1.1) for tests."""

from __future__ import annotations

import struct
from functools import cmp_to_key

from cachefs.closure.ldcache import libcmp

X86_64 = 0x0303
HWCAP_EXTENSION = 1 << 62


def build_cache(
    entries: list[tuple[int, str, str, int]],
    hwcaps: list[str] = (),  # type: ignore[assignment]
    *,
    old_prefix: bool = False,
) -> bytes:
    """``entries``: (flags, name, path, hwcap); ``hwcaps``: the names of the
    glibc-hwcaps section (an entry's hwcap is HWCAP_EXTENSION | index). Entries
    are sorted by name as ldconfig sorts them; those of one name keep their order."""
    entries = sorted(entries, key=cmp_to_key(_descending))
    header_size, entry_size = 48, 24
    strings = bytearray()
    strings_at = header_size + entry_size * len(entries)
    offsets: dict[str, int] = {}

    def add(text: str) -> int:
        if text not in offsets:
            offsets[text] = strings_at + len(strings)
            strings.extend(text.encode() + b"\0")
        return offsets[text]

    table = b"".join(
        struct.pack("<iIIIQ", flags, add(name), add(path), 0, hwcap)
        for flags, name, path, hwcap in entries
    )
    hwcap_offsets = [add(h) for h in hwcaps]
    ext_at = (strings_at + len(strings) + 3) & ~3
    extension = b""
    if hwcaps:
        array_at = ext_at + 8 + 16
        extension = struct.pack("<II", 0xEAA42174, 1)
        extension += struct.pack("<IIII", 1, 0, array_at, 4 * len(hwcaps))
        extension += struct.pack(f"<{len(hwcaps)}I", *hwcap_offsets)
    header = struct.pack(
        "<20sIIB3xI12x",
        b"glibc-ld.so.cache1.1",
        len(entries),
        len(strings),
        2,
        ext_at if hwcaps else 0,
    )
    new = header + table + bytes(strings)
    new += bytes(ext_at - len(new)) + extension
    if not old_prefix:
        return new
    # An old-format table of one entry before the new one, at an 8-byte boundary.
    old = b"ld.so-1.7.0\0" + struct.pack("<I", 1) + struct.pack("<iII", 1, 0, 0)
    return old + bytes(-len(old) % 8) + new


def _descending(a: tuple[int, str, str, int], b: tuple[int, str, str, int]) -> int:
    return libcmp(b[1], a[1])
