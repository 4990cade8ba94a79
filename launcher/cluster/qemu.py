"""A QEMU virtual node: PXE boot (or a direct kernel boot) on a tap of a boot network.

Software emulation only (``-accel tcg``: no KVM on the machines this is tested
on). The NIC is virtio-net with QEMU's iPXE option ROM, so the firmware's DHCP
comes from iPXE itself. The serial console goes to a file the caller reads
(:meth:`VirtualNode.wait_for`); ``-no-reboot`` with the kernel's ``panic=-1``
makes a failed boot end the VM instead of looping. Stopped by its pid only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import VirtualNodeError

QEMU = "qemu-system-x86_64"
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")


def mac_for(index: int, prefix: str = "52:54:00:be") -> str:
    """A locally administered MAC for node ``index`` (0..65535)."""
    return f"{prefix}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


@dataclass
class VirtualNode:
    """One VM. ``kernel``/``initrd``/``append`` set: a direct boot; unset: PXE from the NIC."""

    name: str
    mac: str
    tap: str
    serial_log: Path
    memory_mib: int = 1024
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    #: prefix that runs QEMU in the boot network (``BootNetwork.argv``)
    wrap: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started: float = 0.0

    def argv(self) -> list[str]:
        if shutil.which(QEMU) is None:
            raise VirtualNodeError(self.name, f"{QEMU} not found; apt-get install qemu-system-x86")
        if not IPXE_ROM.exists():
            raise VirtualNodeError(self.name, f"{IPXE_ROM} not found; apt-get install ipxe-qemu")
        argv = [
            QEMU,
            "-accel",
            "tcg",
            "-m",
            str(self.memory_mib),
            "-smp",
            "1",
            "-display",
            "none",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            f"file:{self.serial_log}",
            "-netdev",
            f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
            "-device",
            # disable-legacy=on: Debian's efi-virtio.rom is built for the modern-only
            # device (1af4:1041); on QEMU's default transitional one (1af4:1000)
            # SeaBIOS skips the ROM and tries floppy, CD and disk instead.
            f"virtio-net-pci,netdev=n0,mac={self.mac},romfile={IPXE_ROM},disable-legacy=on"
            + (",bootindex=1" if self.kernel is None else ""),
        ]
        if self.kernel is not None:
            argv += ["-kernel", str(self.kernel)]
            if self.initrd is not None:
                argv += ["-initrd", str(self.initrd)]
            argv += ["-append", self.append]
        return [*self.wrap, *argv]

    def start(self) -> None:
        """Power on. Raises VirtualNodeError when QEMU or the iPXE ROM is missing."""
        self.serial_log.parent.mkdir(parents=True, exist_ok=True)
        self.serial_log.write_bytes(b"")
        stderr = open(self.serial_log.with_suffix(".qemu.err"), "wb")  # noqa: SIM115
        with stderr:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        self.started = time.monotonic()

    def console(self) -> str:
        try:
            return self.serial_log.read_text("utf-8", "replace")
        except OSError:
            return ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the serial console matches ``pattern`` (a regex); the match.

        Raises VirtualNodeError, with the console's last lines, on timeout or when
        the VM ends first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.console())
            if found is not None:
                return found
            if not self.running():
                raise VirtualNodeError(
                    self.name, f"ended before {pattern!r} appeared; console ends:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                waited = f"no {pattern!r} within {timeout:.0f} s"
                raise VirtualNodeError(self.name, f"{waited}; console ends:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 25) -> str:
        err = self.serial_log.with_suffix(".qemu.err")
        text = "\n".join(self.console().splitlines()[-lines:])
        if err.exists() and err.stat().st_size:
            text += "\n[qemu stderr] " + err.read_text("utf-8", "replace")[-2000:]
        return text

    def stop(self, timeout: float = 5.0) -> None:
        """Power off: SIGTERM to QEMU (its own process group), SIGKILL after ``timeout``."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
