"""bootsvc.squash with the real mksquashfs and unsquashfs (squashfs-tools)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from bootsvc import newc, squash
from bootsvc.errors import Stage3BuildError


def _image(init: bytes = b"#!/bin/sh\n") -> bytes:
    members = [
        newc.directory("usr"),
        newc.directory("usr/bin"),
        newc.regular("usr/bin/busybox", b"\x7fELF" + b"x" * 5000, 0o755),
        newc.symlink("bin", "usr/bin"),
        newc.symlink("usr/bin/sh", "busybox"),
        newc.regular("init", init, 0o755),
        newc.regular("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
        newc.char_device("dev/console", 5, 1),
        newc.directory("tmp", 0o1777),
    ]
    return gzip.compress(newc.write(members), mtime=0)


@pytest.fixture(autouse=True)
def _tools() -> None:
    if shutil.which("mksquashfs") is None or shutil.which("unsquashfs") is None:
        pytest.fail("squashfs-tools missing: make test installs it")


def test_same_members_give_the_same_bytes_and_other_members_others() -> None:
    one = squash.from_newc(_image())
    assert one[:4] == squash.MAGIC
    assert hashlib.sha256(one).digest() == hashlib.sha256(squash.from_newc(_image())).digest()
    assert squash.from_newc(_image(b"#!/bin/sh\necho\n")) != one
    assert squash.from_newc(_image(), mtime=1) != one


def test_the_image_holds_the_members_with_their_modes(tmp_path: Path) -> None:
    image = tmp_path / "s3.sqfs"
    image.write_bytes(squash.from_newc(_image()))
    listing = subprocess.run(
        ["unsquashfs", "-lls", "-n", str(image)], capture_output=True, text=True, check=True
    ).stdout
    lines = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line
        for line in listing.splitlines()
        if "squashfs-root" in line
    }
    assert lines["squashfs-root/init"].startswith("-rwxr-xr-x root/root")
    assert (
        lines["squashfs-root/bin"].startswith("lrwxrwxrwx")
        and "-> usr/bin" in lines["squashfs-root/bin"]
    )
    assert lines["squashfs-root/dev/console"].startswith("crw-------")
    assert lines["squashfs-root/tmp"].startswith("drwxrwxrwt")
    assert lines["squashfs-root/etc/passwd"].startswith("-rw-r--r-- root/root")


def test_bad_input_is_named() -> None:
    with pytest.raises(Stage3BuildError, match="not gzip newc"):
        squash.from_newc(b"not an image")
