"""The loader configuration derived from the CPU and glibc version."""

from __future__ import annotations

from cachefs.closure import host

V2 = {"cx16", "lahf_lm", "pni", "popcnt", "sse4_1", "sse4_2", "ssse3"}
V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
V4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def test_psabi_levels_need_every_lower_level() -> None:
    assert host.x86_64_levels(set()) == ()
    assert host.x86_64_levels(V2) == ("x86-64-v2",)
    assert host.x86_64_levels(V2 | V3 | V4) == ("x86-64-v4", "x86-64-v3", "x86-64-v2")
    assert host.x86_64_levels(V2 | V4) == ("x86-64-v2",)  # v4 without v3 is not v4
    assert host.x86_64_levels((V2 - {"popcnt"}) | V3) == ()


def test_legacy_subdirectories_of_glibc_2_36() -> None:
    # What LD_DEBUG=libs prints on Debian 12 for every search directory.
    assert host.legacy_subdirs(["tls", "x86_64", "x86_64"]) == (
        "tls/x86_64/x86_64", "tls/x86_64", "tls/x86_64", "tls",
        "x86_64/x86_64", "x86_64", "x86_64",
    )  # fmt: skip


def test_detect_by_glibc_version() -> None:
    old = host.detect(2, 62, version=(2, 36), flags=frozenset(V2))
    new = host.detect(2, 62, version=(2, 38), flags=frozenset(V2))
    assert old.subdirs[0] == "glibc-hwcaps/x86-64-v2" and "tls" in old.subdirs
    assert new.subdirs == ("glibc-hwcaps/x86-64-v2",)
    assert old.platform == "x86_64"
