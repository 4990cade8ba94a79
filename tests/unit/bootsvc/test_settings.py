"""The [boot] table: parsed into BootSettings, each bad value refused naming its key.

Reading it from a config file, with the file in the message:
tests/unit/launcher/test_config_sections.py.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from bootsvc.dhcp import generate
from bootsvc.errors import BootSettingsError
from bootsvc.settings import BootSettings, parse, render

FULL = {
    "interface": "br-beo",
    "network": "10.77.0.0/24",
    "master_address": "10.77.0.1",
    "mode": "pool",
    "pool_first": "10.77.0.100",
    "pool_last": "10.77.0.199",
    "ra": True,
    "ipxe_dir": "/opt/ipxe",
    "extra_kernel_args": "quiet loglevel=3",
    "ticket_ttl_s": 60,
    "max_pending": 10,
    "new_nodes_per_minute": 30,
    "new_nodes_per_address_per_minute": 2,
}
MINIMAL = {"interface": "br-beo", "network": "10.77.0.0/24", "master_address": "10.77.0.1"}


def test_a_full_table() -> None:
    assert parse(FULL) == BootSettings(
        interface="br-beo",
        network=IPv4Network("10.77.0.0/24"),
        master_address=IPv4Address("10.77.0.1"),
        mode="pool",
        pool=(IPv4Address("10.77.0.100"), IPv4Address("10.77.0.199")),
        ra=True,
        ipxe_dir=Path("/opt/ipxe"),
        extra_kernel_args="quiet loglevel=3",
        ticket_ttl_s=60,
        max_pending=10,
        new_nodes_per_minute=30,
        new_nodes_per_address_per_minute=2,
    )


def test_defaults() -> None:
    got = parse(MINIMAL)
    assert (got.mode, got.pool, got.ra, got.ipxe_dir, got.extra_kernel_args) == (
        "static",
        None,
        False,
        Path("/usr/lib/ipxe"),
        "",
    )
    # A ticket lives 5 minutes (a TCG boot enrolls in 25-56 s), not 15; pending
    # nodes are bounded and rate-limited.
    assert got.ticket_ttl_s == 300
    assert (got.max_pending, got.new_nodes_per_minute, got.new_nodes_per_address_per_minute) == (
        256,
        60,
        4,
    )


def test_render_is_the_inverse_of_parse() -> None:
    for table in (FULL, MINIMAL, {**MINIMAL, "pool_first": "10.77.0.9", "pool_last": "10.77.0.9"}):
        assert parse(render(parse(table))) == parse(table)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"interface": "br0\nenable-tftp"}, "boot.interface"),
        ({"interface": ""}, "boot.interface"),
        ({"network": "10.77.0.0/33"}, "boot.network"),
        ({"network": "fd00::/64"}, "boot.network"),
        ({"network": "10.77.0.1/24"}, "boot.network"),  # host bits set
        ({"master_address": "10.78.0.1"}, "boot.master_address"),
        ({"master_address": "10.77.0.255"}, "boot.master_address"),
        ({"master_address": "nope"}, "boot.master_address"),
        ({"mode": "relay"}, "boot.mode"),
        ({"pool_first": None}, "boot.pool_first"),
        ({"pool_last": "10.77.1.5"}, "boot.pool_last"),
        ({"pool_first": "10.77.0.200"}, "boot.pool_last"),
        ({"pool_first": "10.77.0.1"}, "boot.pool_first"),
        ({"ra": "yes"}, "boot.ra"),
        ({"ipxe_dir": "ipxe"}, "boot.ipxe_dir"),
        ({"ipxe_dir": 3}, "boot.ipxe_dir"),
        ({"extra_kernel_args": "a\nb"}, "boot.extra_kernel_args"),
        ({"extra_kernel_args": "x=${mac}"}, "boot.extra_kernel_args"),
        ({"ticket_ttl_s": 0}, "boot.ticket_ttl_s"),
        ({"ticket_ttl_s": True}, "boot.ticket_ttl_s"),
        ({"max_pending": 0}, "boot.max_pending"),
        ({"max_pending": "many"}, "boot.max_pending"),
        ({"new_nodes_per_minute": -1}, "boot.new_nodes_per_minute"),
        ({"new_nodes_per_address_per_minute": 1.5}, "boot.new_nodes_per_address_per_minute"),
        ({"tftp_root": "/srv"}, "boot.tftp_root"),
    ],
)
def test_bad_values_name_their_key(changes: dict[str, Any], key: str) -> None:
    table = {**FULL, **changes}
    table = {k: v for k, v in table.items() if v is not None}
    with pytest.raises(BootSettingsError) as caught:
        parse(table)
    assert caught.value.key == key
    assert str(caught.value) == f"key '{key}': {caught.value.problem}"


def test_pool_mode_needs_a_pool() -> None:
    with pytest.raises(BootSettingsError) as caught:
        parse({**MINIMAL, "mode": "pool"})
    assert caught.value.key == "boot.pool_first"


def test_next_free_address_skips_the_master_the_pool_and_used_ones() -> None:
    boot = parse({**FULL, "network": "10.77.0.0/24"})
    assert boot.next_free_address([]) == IPv4Address("10.77.0.2")
    assert boot.next_free_address(["10.77.0.2", None, "10.77.0.3"]) == IPv4Address("10.77.0.4")
    below = [f"10.77.0.{i}" for i in range(2, 100)]
    assert boot.next_free_address(below) == IPv4Address("10.77.0.200")
    full = below + [f"10.77.0.{i}" for i in range(200, 255)]
    assert boot.next_free_address(full) is None


def test_dhcp_settings_send_ipxe_to_boot_ipxe_over_tftp(tmp_path: Path) -> None:
    boot = parse(FULL)
    conf = generate(boot.dhcp(tmp_path), []).conf.splitlines()
    assert "dhcp-boot=tag:ipxe,boot.ipxe,,10.77.0.1" in conf
    assert "dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,12h" in conf
    assert f"dhcp-hostsfile={tmp_path / 'dnsmasq.hosts'}" in conf
