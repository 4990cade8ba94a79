"""The real stage-3 image: built from this install, unpacked by the real cpio and run
in a chroot (the closure is complete), built again through the CLI (same sha256),
and booted with Debian's kernel under QEMU (python starts, fuse.ko and the NFS client load).

The kernel is the one ``.ci/kernel-fetch`` unpacks (tests/integration/bootlab.py:
``$BEOLAUNCH_KERNEL_DIR`` or /var/cache/beolaunch/kernel); without it the tests
skip (fail under CI).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bootsvc import newc, squash, stage3
from launcher.cli.beoctl.bootstage3 import build_stage3
from launcher.cli.context import CliContext
from tests.integration.bootlab import TestKernel, missing_or_skip, test_kernel

pytestmark = pytest.mark.slow  # each builds or boots a ~20 MB image: 15-60 s

LIMIT = 40 * 1024 * 1024
#: The NFSv4 client in load order (Debian 6.1's modules.dep), after fuse.ko.
NFS_MODULES = [
    "netfs.ko", "fscache.ko", "sunrpc.ko", "grace.ko", "lockd.ko", "nfs.ko",
    "dns_resolver.ko", "nfsv4.ko",
]  # fmt: skip


@dataclass(frozen=True)
class Built:
    path: Path
    sha256: str
    built_from: dict[str, Any]
    kernel: TestKernel


def _busybox() -> Path:
    found = shutil.which("busybox")
    if found is None:
        pytest.fail("busybox not found: apt-get install busybox-static")
    return Path(found)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    kernel = test_kernel()
    image, built_from = stage3.build(kernel.modules_dir, busybox=_busybox())
    path = tmp_path_factory.mktemp("stage3") / "stage3.img"
    path.write_bytes(image)
    return Built(path, hashlib.sha256(image).hexdigest(), built_from, kernel)


def test_size_and_record(built: Built) -> None:
    size = built.path.stat().st_size
    assert size < LIMIT, f"stage 3 is {size} bytes, over the 40 MiB goal"
    record = built.built_from
    assert record["kernel_release"] == built.kernel.modules_dir.name
    assert record["kernel_modules"] == ["fuse.ko", *NFS_MODULES]
    assert record["python_version"].startswith("3.")
    for package in ("aiohttp", "psutil", "fusepy", "click", "beolaunch"):
        assert package in record["packages"]
    assert record["busybox_sha256"] == hashlib.sha256(_busybox().read_bytes()).hexdigest()


@pytest.fixture
def unpacked(built: Built, tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        missing_or_skip("needs root (chroot, mount)")
    cpio = shutil.which("cpio")
    if cpio is None:
        pytest.fail("cpio not found: apt-get install cpio")
    root = tmp_path / "root"
    root.mkdir()
    archive = subprocess.run(["gzip", "-dc", str(built.path)], capture_output=True, check=True)
    subprocess.run(
        [cpio, "-idm", "--quiet"], input=archive.stdout, cwd=root, check=True, capture_output=True
    )
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root / "proc")], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _env(root: Path) -> dict[str, str]:
    """The environment /init gives python: PATH, HOME and the image's stage3.env."""
    env = {"PATH": "/usr/bin:/usr/sbin", "HOME": "/root"}
    for line in (root / stage3.STAGE3_ENV).read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


def _in_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), *argv], env=_env(root), capture_output=True, text=True, timeout=120
    )


def test_closure_complete_in_chroot(unpacked: Path) -> None:
    root = unpacked
    assert sorted(p.name for p in root.iterdir()) == [
        "bin", "dev", "etc", "init", "lib", "lib64", "mnt", "proc", "root", "run", "sbin",
        "sys", "tmp", "usr", "var",
    ]  # fmt: skip
    program = (
        "import json, launcher.node.agent, launcher.node.boot, launcher.cli.beonode, "
        "launcher.node.tasks.enter_task, launcher.node.tasks.enter_step, cachefs.view.fuse\n"
        "from launcher.node.hardware import hardware_report\n"
        "print(json.dumps(hardware_report()))"
    )
    done = _in_root(root, "/usr/bin/python", "-c", program)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cpus_logical"] >= 1 and report["memory_bytes"] > 0
    assert any(nic["name"] == "lo" for nic in report["nics"])
    # the shipped .pyc are used as they are (checked by hash: the archive's mtime is 0)
    done = _in_root(root, "/usr/bin/python", "-B", "-v", "-c", "import launcher.node.agent")
    assert done.returncode == 0, done.stderr
    assert "launcher/node/__pycache__/agent." in done.stderr
    assert "code object from '/usr/lib/python3/dist-packages/launcher/node/__pycache__/agent." in (
        done.stderr
    )
    done = _in_root(root, "/usr/bin/fusermount", "-V")
    assert done.returncode == 0 and "version" in done.stdout + done.stderr
    done = _in_root(
        root, "/bin/sh", "-c", "insmod --help 2>&1 | head -1; syslogd --help 2>&1 | head -1"
    )
    assert "BusyBox" in done.stdout
    done = _in_root(root, "/bin/sh", "-n", "/init")
    assert done.returncode == 0, done.stderr
    release = root / "usr/lib/modules" / unpacked_release(root)
    order = (release / stage3.LOAD_ORDER).read_text().split()
    assert order[0] == "kernel/fs/fuse/fuse.ko"
    assert [Path(rel).name for rel in order[1:]] == NFS_MODULES
    for rel in order:
        assert (release / rel).read_bytes()[:4] == b"\x7fELF"


def unpacked_release(root: Path) -> str:
    (release,) = (p.name for p in (root / "usr/lib/modules").iterdir())
    return release


def test_same_sha256_through_the_cli(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "again.img"
    build_stage3.main(
        [
            "--modules-dir",
            str(built.kernel.modules_dir),
            "--busybox",
            str(_busybox()),
            "--format",
            "cpio",
            "--out",
            str(out),
        ],
        standalone_mode=False,
        obj=CliContext(None),
    )
    assert hashlib.sha256(out.read_bytes()).hexdigest() == built.sha256


def test_the_squashfs_format_holds_the_same_files(built: Built, tmp_path: Path) -> None:
    # What nodes boot (bootsvc.squash): the cpio's members, mounted instead of unpacked.
    out = tmp_path / "stage3.sqfs"
    out.write_bytes(squash.from_newc(built.path.read_bytes()))
    listing = subprocess.run(
        ["unsquashfs", "-l", "-n", str(out)], capture_output=True, text=True, check=True
    ).stdout
    paths = {line.removeprefix("squashfs-root/") for line in listing.split()}
    members = newc.read(gzip.decompress(built.path.read_bytes()))
    assert {m.entry.path for m in members} <= paths
    assert "init" in paths and "usr/bin/busybox" in paths


def test_boots_under_qemu(built: Built, tmp_path: Path) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        missing_or_skip("needs qemu-system-x86 (make test installs it)")
        return
    serial = tmp_path / "serial.log"
    argv = [
        qemu, "-accel", "tcg", "-m", "1024",
        "-kernel", str(built.kernel.vmlinuz), "-initrd", str(built.path),
        "-append", "console=ttyS0 panic=-1 rdinit=/init beolaunch.debug beolaunch.selftest",
        "-nographic", "-no-reboot", "-monitor", "none", "-serial", f"file:{serial}",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        pytest.fail(f"QEMU still running after 300 s; serial log:\n{_tail(serial)}")
    log = serial.read_text(errors="replace")
    assert process.returncode == 0, stderr.decode(errors="replace")
    for mark in ("PYTHON-OK", "FUSERMOUNT-OK", "FUSE-OK", "NFS-OK", "STAGE3-OK"):
        assert mark in log, f"{mark} missing; serial log:\n{_tail(serial)}"
    assert '"kernel": "' + built.kernel.modules_dir.name in log  # the hardware report
    assert "Kernel panic" not in log


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-40:])
    except OSError:
        return "(no serial log)"


def test_enrolls_and_starts_the_agent_in_chroot(unpacked: Path) -> None:
    """launcher.node.boot with the image's Python: enroll at a real HTTP server on
    loopback (the chroot shares this network), token written 0600, the agent up
    (its local socket bound) and trying the master's control URL; SIGTERM stops it."""
    root = unpacked
    answer = {"name": "n1", "token": "tok-1", "control_url": "ws://127.0.0.1:9/node"}
    seen: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    run = root / "run/beolaunch"
    run.mkdir(parents=True)
    (run / "boot.env").write_text(
        f"BEOLAUNCH_MASTER=127.0.0.1\nBEOLAUNCH_HTTP={server.server_address[1]}\n"
        "BEOLAUNCH_NAME=n1\nBEOLAUNCH_TICKET=ticket-1\n"
    )
    process = subprocess.Popen(
        ["chroot", str(root), "/usr/bin/python", "-m", "launcher.node.boot"],
        env=_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "agent.sock").exists():
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "the agent's local socket never appeared"
            time.sleep(0.2)
        assert json.loads(seen[0]) == {"ticket": "ticket-1"}
        assert (run / "token").read_text() == "tok-1\n"
        assert stat.S_IMODE((run / "token").stat().st_mode) == 0o600
        assert (root / "var/cache/beolaunch/cache").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        server.shutdown()
        server.server_close()
    text = output.decode(errors="replace")
    assert "enrolled as n1" in text, text
    assert process.returncode == 0, text
