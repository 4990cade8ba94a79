"""The TFTP root the master writes at start: boot.ipxe and the iPXE binaries."""

from __future__ import annotations

from pathlib import Path

from bootsvc.settings import parse
from launcher.master.bootservices import fill_tftp_root


def test_boot_ipxe_and_the_binaries_are_written(tmp_path: Path) -> None:
    ipxe = tmp_path / "ipxe"
    ipxe.mkdir()
    (ipxe / "undionly.kpxe").write_bytes(b"kpxe")
    (ipxe / "ipxe.efi").write_bytes(b"efi")
    boot = parse(
        {
            "interface": "br-beo",
            "network": "10.77.0.0/24",
            "master_address": "10.77.0.1",
            "ipxe_dir": str(ipxe),
        }
    )
    root = tmp_path / "tftp"
    assert fill_tftp_root(root, boot, 4873) == []
    assert (root / "boot.ipxe").read_text() == (
        "#!ipxe\n"
        ":retry\n"
        "chain http://10.77.0.1:4873/boot/${mac:hexhyp}.ipxe || goto wait\n"
        ":wait\n"
        "echo Beolaunch: no boot script from 10.77.0.1:4873; asking again\n"
        "sleep 5\n"
        "goto retry\n"
    )
    assert (root / "undionly.kpxe").read_bytes() == b"kpxe"
    assert (root / "ipxe.efi").read_bytes() == b"efi"
    (ipxe / "ipxe.efi").write_bytes(b"efi2")
    assert fill_tftp_root(root, boot, 4999) == []
    assert (root / "ipxe.efi").read_bytes() == b"efi2"
    assert "10.77.0.1:4999" in (root / "boot.ipxe").read_text()
    assert sorted(p.name for p in root.iterdir()) == ["boot.ipxe", "ipxe.efi", "undionly.kpxe"]


def test_missing_binaries_are_reported(tmp_path: Path) -> None:
    boot = parse(
        {
            "interface": "br-beo",
            "network": "10.77.0.0/24",
            "master_address": "10.77.0.1",
            "ipxe_dir": str(tmp_path / "none"),
        }
    )
    root = tmp_path / "tftp"
    assert fill_tftp_root(root, boot, 4873) == ["undionly.kpxe", "ipxe.efi"]
    assert [p.name for p in root.iterdir()] == ["boot.ipxe"]
