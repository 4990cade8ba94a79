"""The bare router advertisement's bytes (RFC 4861 4.2)."""

from __future__ import annotations

import struct

import pytest

from bootsvc.ra import advertisement


def test_says_no_router_no_prefix_and_carries_the_source_mac() -> None:
    mac = bytes.fromhex("525400be0001")
    msg = advertisement(mac)
    kind, code, _checksum, hop_limit, flags, lifetime, reachable, retrans = struct.unpack(
        "!BBHBBHII", msg[:16]
    )
    assert (kind, code) == (134, 0)
    assert hop_limit == 64
    assert flags == 0  # no managed / other configuration: iPXE asks no DHCPv6
    assert lifetime == 0  # not a default router
    assert (reachable, retrans) == (0, 0)
    # One option, source link-layer address, length 1 (8 bytes): no prefix option.
    assert msg[16:] == bytes([1, 1]) + mac
    assert len(msg) == 24


def test_a_mac_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        advertisement(b"\x00" * 5)
