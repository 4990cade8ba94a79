"""Unit tests of the TFTP root confinement (bootsvc.tftp.resolve_in_root, open_in_root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootsvc.errors import TftpPathRefusedError
from bootsvc.tftp import open_in_root, resolve_in_root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A TFTP root beside a secret, with a subdirectory and symlinks in and out."""
    root = tmp_path / "tftp"
    (root / "efi").mkdir(parents=True)
    (root / "ipxe.efi").write_bytes(b"ipxe")
    (root / "efi" / "snp.efi").write_bytes(b"snp")
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "inside-link").symlink_to("efi/snp.efi")
    (root / "outside-link").symlink_to(tmp_path / "secret")
    (root / "outside-dir").symlink_to(tmp_path)
    return root


def test_resolve_normal_file(tree: Path) -> None:
    assert resolve_in_root(tree, "ipxe.efi") == tree / "ipxe.efi"
    assert resolve_in_root(tree, "efi/snp.efi") == tree / "efi" / "snp.efi"


def test_resolve_leading_slash_means_the_root(tree: Path) -> None:
    assert resolve_in_root(tree, "/ipxe.efi") == tree / "ipxe.efi"
    assert resolve_in_root(tree, str(tree / "ipxe.efi")) == tree / "ipxe.efi"


def test_resolve_absolute_path_elsewhere_stays_under_root(tree: Path) -> None:
    secret = tree.parent / "secret"
    resolved = resolve_in_root(tree, str(secret))
    assert resolved != secret
    assert resolved.is_relative_to(tree)


def test_resolve_symlink_inside_root_allowed(tree: Path) -> None:
    assert resolve_in_root(tree, "inside-link") == tree / "efi" / "snp.efi"


@pytest.mark.parametrize(
    "name",
    ["../secret", "efi/../../secret", "/../secret", "outside-link", "outside-dir/secret", ".", ""],
)
def test_resolve_escape_refused(tree: Path, name: str) -> None:
    with pytest.raises(TftpPathRefusedError) as info:
        resolve_in_root(tree, name)
    assert info.value.name == name
    assert info.value.root == tree


def test_resolve_nul_refused(tree: Path) -> None:
    with pytest.raises(TftpPathRefusedError):
        resolve_in_root(tree, "ipxe.efi\0x")


def test_open_reads_file_and_symlink_inside(tree: Path) -> None:
    with open_in_root(tree, "ipxe.efi") as f:
        assert f.read() == b"ipxe"
    with open_in_root(tree, "inside-link") as f:
        assert f.read() == b"snp"


@pytest.mark.parametrize("name", ["../secret", "outside-link", "outside-dir/secret"])
def test_open_escape_refused(tree: Path, name: str) -> None:
    with pytest.raises(TftpPathRefusedError):
        open_in_root(tree, name)


def test_open_absolute_path_elsewhere_not_served(tree: Path) -> None:
    with pytest.raises(TftpPathRefusedError, match="No such file"):
        open_in_root(tree, str(tree.parent / "secret"))


def test_open_directory_refused(tree: Path) -> None:
    with pytest.raises(TftpPathRefusedError, match="not a regular file"):
        open_in_root(tree, "efi")


def test_open_refuses_when_component_swapped_after_resolve(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race the /proc/self/fd check is for: "efi" is resolved while it is a
    # directory, then replaced by a symlink out of the root before the open.
    import bootsvc.tftp as tftp

    real_resolve = tftp.resolve_in_root
    outside = tree.parent / "elsewhere"
    outside.mkdir()
    (outside / "snp.efi").write_bytes(b"not yours")

    def resolve_then_swap(root: Path, name: str) -> Path:
        path = real_resolve(root, name)
        os.rename(tree / "efi", tree.parent / "efi-moved")
        (tree / "efi").symlink_to(outside)
        return path

    monkeypatch.setattr(tftp, "resolve_in_root", resolve_then_swap)
    with pytest.raises(TftpPathRefusedError, match="outside the root"):
        open_in_root(tree, "efi/snp.efi")
