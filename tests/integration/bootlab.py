"""What the QEMU boot tests share: the node kernel, a boot network, virtual nodes.

The kernel is Debian's linux-image-amd64, unpacked by ``.ci/kernel-fetch`` (which
``make test`` runs) into ``$BEOLAUNCH_KERNEL_DIR`` or /var/cache/beolaunch/kernel.
Missing parts fail under CI (``make test`` installs them) and skip otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from launcher.cluster.bootnet import BootNetwork
from launcher.cluster.qemu import IPXE_ROM, QEMU, VirtualNode, mac_for
from launcher.cluster.vmlab import VmLab

KERNEL_DIR = Path(os.environ.get("BEOLAUNCH_KERNEL_DIR", "/var/cache/beolaunch/kernel"))


def missing_or_skip(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class TestKernel:
    vmlinuz: Path
    modules_dir: Path
    deb: Path | None


def test_kernel() -> TestKernel:
    """The unpacked node kernel; fails under CI and skips otherwise when absent."""
    if not (KERNEL_DIR / ".complete").exists():
        missing_or_skip(f"no node kernel in {KERNEL_DIR}: run .ci/kernel-fetch (make test does)")
    vmlinuz = sorted((KERNEL_DIR / "boot").glob("vmlinuz-*"))
    modules = sorted((KERNEL_DIR / "lib" / "modules").iterdir())
    debs = sorted(KERNEL_DIR.glob("*.deb"))
    return TestKernel(vmlinuz[-1], modules[-1], debs[-1] if debs else None)


test_kernel.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test
TestKernel.__test__ = False  # type: ignore[attr-defined]


def require_qemu() -> None:
    if os.geteuid() != 0:
        missing_or_skip("needs root (network namespaces, tap devices)")
    if shutil.which(QEMU) is None or not IPXE_ROM.exists():
        missing_or_skip("needs qemu-system-x86 and ipxe-qemu (make test installs them)")


@contextmanager
def boot_network(third_octet: int) -> Iterator[BootNetwork]:
    """A namespace with a bridge at 10.234.N.1/24, removed afterwards with what ran in it."""
    net = BootNetwork(f"bt-{secrets.token_hex(3)}", IPv4Network(f"10.234.{third_octet}.0/24"))
    net.create()
    try:
        yield net
    finally:
        net.remove()


def virtual_node(
    net: BootNetwork, index: int, log_dir: Path, *, memory_mib: int = 1024, **boot: object
) -> VirtualNode:
    """Node ``index`` on a tap of ``net``; ``boot`` may give kernel/initrd/append."""
    tap = net.add_tap(f"tap{index}")
    return VirtualNode(
        f"vm{index}",
        mac_for(index),
        tap,
        log_dir / f"vm{index}.serial",
        memory_mib=memory_mib,
        wrap=net.argv([]),
        **boot,  # type: ignore[arg-type]
    )


@contextmanager
def booted_lab(prefix: str, tag: str, third_octet: int, **setup: Any) -> Iterator[VmLab]:
    """A QEMU lab (launcher.cluster.vmlab) on Debian's kernel, set up with ``setup``
    (images built, master up), in a state dir ``/tmp/PREFIX...`` and a namespace
    ``TAG-<hex>``; its VMs, master, NFS server and namespace gone afterwards."""
    require_qemu()
    kernel = test_kernel()
    assert kernel.deb is not None, "the kernel cache has no .deb: rerun .ci/kernel-fetch"
    state = Path(tempfile.mkdtemp(prefix=prefix))
    lab = VmLab.create(state, f"{tag}-{secrets.token_hex(3)}", third_octet)
    try:
        lab.setup(kernel.deb, **setup)
        yield lab
    finally:
        lab.close()
        lab.remove_state()
