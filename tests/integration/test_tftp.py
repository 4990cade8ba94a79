"""The TFTP server (bootsvc.tftp) on 127.0.0.1 with real clients: tftpy's and curl.

A real tftpy server on a free loopback port, real files and symlinks in a
temporary root. Checks: a file arrives whole at blksize 1428 with tsize
negotiated and the transfer is logged, escapes out of the root fail with a
TFTP error, and a write request is refused without creating anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tftpy

from bootsvc.errors import TftpServiceError
from bootsvc.tftp import TftpService, TftpSettings

# 50 full 1428-byte blocks and a short one: the last-block logic is exercised.
SIZE = 1428 * 50 + 7


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tftp")
    root = base / "root"
    root.mkdir()
    (root / "ipxe.efi").write_bytes(os.urandom(SIZE))
    (base / "secret").write_bytes(b"secret outside the root")
    (root / "outside-link").symlink_to(base / "secret")
    return root


@pytest.fixture(scope="module")
def service(root: Path) -> Iterator[TftpService]:
    with TftpService(TftpSettings(root=root, address="127.0.0.1", port=0)) as svc:
        yield svc


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_blksize_1428(
    service: TftpService, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bootsvc.tftp")
    client = tftpy.TftpClient("127.0.0.1", service.port, options={"blksize": 1428, "tsize": 0})
    out = tmp_path / "ipxe.efi"
    client.download("ipxe.efi", str(out), timeout=2)
    assert sha256(out) == sha256(root / "ipxe.efi")
    assert int(client.context.options["blksize"]) == 1428
    assert int(client.context.options["tsize"]) == SIZE
    # The server logs when it has seen the last ACK, which may be just after the
    # client returns: wait for the line (a deadline, not a timing assertion).
    deadline = time.monotonic() + 10
    while True:
        lines = [r.getMessage() for r in caplog.records if "tftp transfer" in r.getMessage()]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(lines) == 1
    assert "client=127.0.0.1:" in lines[0]
    assert "file=ipxe.efi" in lines[0]
    assert f"bytes={SIZE} " in lines[0]
    assert "blksize=1428 complete" in lines[0]
    assert "seconds=" in lines[0]


def test_symlink_escape_refused(
    service: TftpService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bootsvc.tftp")
    client = tftpy.TftpClient("127.0.0.1", service.port, options={"blksize": 1428})
    out = tmp_path / "got"
    with pytest.raises(tftpy.TftpException):
        client.download("outside-link", str(out), timeout=2)
    assert not out.exists() or b"secret" not in out.read_bytes()
    # Our check decided (tftpy alone would have served the symlink's target).
    assert any("outside-link" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["../secret", "/../secret"])
def test_dotdot_escape_refused(service: TftpService, tmp_path: Path, name: str) -> None:
    client = tftpy.TftpClient("127.0.0.1", service.port)
    out = tmp_path / "got"
    with pytest.raises(tftpy.TftpException):
        client.download(name, str(out), timeout=2)
    assert not out.exists() or b"secret" not in out.read_bytes()


def test_write_refused(
    service: TftpService, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bootsvc.tftp")
    before = sorted(p.name for p in root.iterdir())
    original = sha256(root / "ipxe.efi")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * 3000)
    client = tftpy.TftpClient("127.0.0.1", service.port)
    for name in ("new.bin", "ipxe.efi"):
        with pytest.raises(tftpy.TftpException):
            client.upload(name, str(upload), timeout=2)
    assert sorted(p.name for p in root.iterdir()) == before
    assert sha256(root / "ipxe.efi") == original
    refusals = [r.getMessage() for r in caplog.records if "read-only" in r.getMessage()]
    assert len(refusals) == 2
    assert "'new.bin'" in refusals[0]


def test_busy_port_reported(service: TftpService, root: Path) -> None:
    busy = TftpService(TftpSettings(root=root, address="127.0.0.1", port=service.port))
    with pytest.raises(TftpServiceError) as info:
        busy.start()
    assert info.value.port == service.port
    assert "in use" in info.value.problem


def test_curl_download_blksize_1428(service: TftpService, root: Path, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is missing: make test installs it (apt package curl)")
    out = tmp_path / "ipxe.efi"
    subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--max-time",
            "4",
            "--tftp-blksize",
            "1428",
            "--output",
            str(out),
            f"tftp://127.0.0.1:{service.port}/ipxe.efi",
        ],
        check=True,
        timeout=5,
    )
    assert sha256(out) == sha256(root / "ipxe.efi")
