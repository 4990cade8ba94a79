"""The text each NFS server reads: ganesha's config and the kernel's exports file."""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network
from pathlib import Path

from launcher.master.nfstext import (
    export_ids,
    ganesha_config,
    kernel_exports,
    split_ganesha_config,
)
from launcher.nfsconfig import NfsSettings

SETTINGS = NfsSettings(
    ip_address("10.9.0.1"), ip_network("10.9.0.0/24"), ("/home", "/srv/data"), "ganesha", 12049
)
NFS_DIR = Path("/var/lib/beolaunch/nfs")


def _blocks(text: str) -> list[str]:
    """Each top-level EXPORT block."""
    return re.findall(r"^EXPORT \{.*?^\}", text, flags=re.S | re.M)


def test_ganesha_serves_nfsv4_over_tcp_on_the_address_only() -> None:
    text = ganesha_config(SETTINGS, {"/home": 1, "/srv/data": 2}, NFS_DIR)
    core, _ = split_ganesha_config(text)
    for line in (
        "Protocols = 4;",
        "NFS_Port = 12049;",
        "Bind_addr = 10.9.0.1;",
        "Enable_NLM = false;",
        "Enable_UDP = false;",
        "Graceless = true;",
        "Only_Numeric_Owners = true;",
        'RecoveryRoot = "/var/lib/beolaunch/nfs/recovery";',
    ):
        assert line in core


def test_ganesha_exports_each_path_at_itself_to_the_clients_only() -> None:
    text = ganesha_config(SETTINGS, {"/home": 1, "/srv/data": 7}, NFS_DIR)
    blocks = _blocks(split_ganesha_config(text)[1])
    assert len(blocks) == 2
    for block, path, number in zip(blocks, SETTINGS.exports, (1, 7), strict=True):
        assert f"Export_Id = {number};" in block
        assert f'Path = "{path}";' in block and f'Pseudo = "{path}";' in block
        assert "Squash = root_squash;" in block and "SecType = sys;" in block
        assert "Anonymous_Uid = 65534;" in block and "Anonymous_Gid = 65534;" in block
        # Nobody outside the CLIENT block; read-write inside it.
        outside, client = block.split("CLIENT {", 1)
        assert "Access_Type = None;" in outside
        assert "Clients = 10.9.0.0/24;" in client and "Access_Type = RW;" in client
        assert "FSAL {\n        Name = VFS;" in block


def test_an_export_change_leaves_the_server_part_alone() -> None:
    one = ganesha_config(SETTINGS, {"/home": 1, "/srv/data": 2}, NFS_DIR)
    fewer = NfsSettings(SETTINGS.address, SETTINGS.clients, ("/home",), "ganesha", 12049)
    two = ganesha_config(fewer, {"/home": 1}, NFS_DIR)
    moved = NfsSettings(SETTINGS.address, SETTINGS.clients, ("/home",), "ganesha", 2049)
    three = ganesha_config(moved, {"/home": 1}, NFS_DIR)
    assert split_ganesha_config(one)[0] == split_ganesha_config(two)[0]
    assert split_ganesha_config(one)[1] != split_ganesha_config(two)[1]
    assert split_ganesha_config(two)[0] != split_ganesha_config(three)[0]


def test_export_ids_stay_with_their_paths() -> None:
    first = export_ids(("/a", "/b", "/c"), {})
    assert first == {"/a": 1, "/b": 2, "/c": 3}
    # /b goes, /d comes: /c keeps 3, /d takes the lowest free number.
    assert export_ids(("/c", "/a", "/d"), first) == {"/c": 3, "/a": 1, "/d": 2}


def test_kernel_exports_one_line_per_path_for_the_clients_root_squashed() -> None:
    text = kernel_exports(SETTINGS)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "/home 10.9.0.0/24(rw,sync,root_squash,sec=sys,no_subtree_check)",
        "/srv/data 10.9.0.0/24(rw,sync,root_squash,sec=sys,no_subtree_check)",
    ]
