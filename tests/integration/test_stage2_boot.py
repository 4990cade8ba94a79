"""The real stage 2 (busybox, the real init script, the NIC modules chosen from the real
kernel's index) booted by the real kernel under QEMU, on a boot network of its own.

A direct kernel boot (``-kernel/-initrd``) with the command line the master's iPXE
script would give, so these tests see stage 2 alone: dnsmasq gives the address,
a plain HTTP server stands in for the master's image service and a UDP listener
for its log service. Stage 3 here is a tiny stand-in that prints what stage 2 left
it and powers off; the whole chain with the real master is in test_boot_e2e.py.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootsvc import newc, stage2
from launcher.cluster.bootnet import BootNetwork
from launcher.cluster.qemu import VirtualNode
from tests.integration.bootlab import boot_network, require_qemu, test_kernel, virtual_node
from tests.integration.vcluster import Poll

pytestmark = pytest.mark.slow
HTTP_PORT = 8088
LOG_PORT = 5514
STAND_IN_INIT = """#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
echo STAGE3-REACHED
cat /run/beolaunch/boot.env
echo STAGE2-LOG-BEGIN
cat /run/beolaunch/stage2.log
echo STAGE2-LOG-END
poweroff -f
"""
UDP_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    print(s.recv(65536).decode(errors="replace").rstrip("\\n"), flush=True)
"""


def stand_in_stage3() -> bytes:
    busybox = Path("/bin/busybox").read_bytes()
    members = [newc.directory(d) for d in ("bin", "proc", "run")]
    members += [
        newc.regular("init", STAND_IN_INIT.encode(), 0o755),
        newc.regular("bin/busybox", busybox, 0o755),
    ]
    members += [newc.symlink(f"bin/{a}", "busybox") for a in ("sh", "mount", "echo", "cat")]
    members.append(newc.symlink("bin/poweroff", "busybox"))
    return gzip.compress(newc.write(members), mtime=0)


class Lab:
    def __init__(self, net: BootNetwork, tmp: Path) -> None:
        self.net = net
        self.tmp = tmp
        self.www = tmp / "www"
        (self.www / "boot" / "images").mkdir(parents=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.syslog = tmp / "syslog.txt"

    def spawn(self, argv: list[str], out: Path) -> subprocess.Popen[bytes]:
        with out.open("wb") as f:
            proc = subprocess.Popen(self.net.argv(argv), stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_dhcp_and_logs(self) -> None:
        master = str(self.net.master_address)
        first, last = self.net.address(1), self.net.address(20)
        self.spawn(
            [
                "dnsmasq",
                "--no-daemon",
                "--port=0",
                f"--interface={self.net.bridge}",
                "--bind-interfaces",
                f"--dhcp-range={first},{last},12h",
                f"--dhcp-leasefile={self.tmp / 'leases'}",
                f"--pid-file={self.tmp / 'dnsmasq.pid'}",
            ],
            self.tmp / "dnsmasq.log",
        )
        self.spawn([sys.executable, "-c", UDP_LISTENER, master, str(LOG_PORT)], self.syslog)

    def start_http(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "http.server", "-b", str(self.net.master_address)]
        return self.spawn([*argv, str(HTTP_PORT), "-d", str(self.www)], self.tmp / "http.log")

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_qemu()
    with boot_network(71) as net:
        lab = Lab(net, tmp_path)
        try:
            yield lab
        finally:
            lab.close()


def boot_stage2(lab: Lab, tmp_path: Path, stage3_sha: str) -> VirtualNode:
    kernel = test_kernel()
    image, built = stage2.build_for_kernel(
        kernel.modules_dir, [stage2.VIRTIO_NET_MODALIAS], Path("/bin/busybox")
    )
    assert built["nic_modules"][-1] == "virtio_net.ko"
    assert built["modules"][-3:] == ["loop.ko", "squashfs.ko", "overlay.ko"]
    initrd = tmp_path / "stage2.img"
    initrd.write_bytes(image)
    master = lab.net.master_address
    append = (
        f"console=ttyS0 panic=-1 quiet beolaunch.master={master} beolaunch.http={HTTP_PORT} "
        f"beolaunch.logs={LOG_PORT} beolaunch.name=n1 beolaunch.ticket=T1CKET "
        f"beolaunch.stage3={stage3_sha}"
    )
    vm = virtual_node(lab.net, 1, tmp_path, kernel=kernel.vmlinuz, initrd=initrd, append=append)
    vm.start()
    return vm


def test_stage2_logs_to_the_master_first_and_switches_into_stage3(lab: Lab, tmp_path: Path) -> None:
    stage3 = stand_in_stage3()
    sha = hashlib.sha256(stage3).hexdigest()
    (lab.www / "boot" / "images" / sha).write_bytes(stage3)
    lab.start_dhcp_and_logs()
    lab.start_http()
    vm = boot_stage2(lab, tmp_path, sha)
    try:
        vm.wait_for(r"STAGE2-LOG-END", 120)
    finally:
        vm.stop()
    console = vm.console()
    assert "BEOLAUNCH_NAME=n1" in console
    assert "BEOLAUNCH_TICKET=T1CKET" in console
    assert "beolaunch.ticket=(hidden)" in console  # never echoed to the console or the log
    assert "sha256 checked" in console
    received = lab.syslog.read_text()
    # What stage 2 said before it had an address reached the master too, marked so.
    assert "(before network)" in received and "starting on 6.1" in received
    assert "stage 3 fetched" in received and "switching to stage 3" in received
    assert "T1CKET" not in received


def test_stage2_retries_a_master_that_is_down_and_a_corrupt_image(lab: Lab, tmp_path: Path) -> None:
    stage3 = stand_in_stage3()
    sha = hashlib.sha256(stage3).hexdigest()
    served = lab.www / "boot" / "images" / sha
    lab.start_dhcp_and_logs()  # DHCP answers; the image service is down
    vm = boot_stage2(lab, tmp_path, sha)
    try:
        vm.wait_for(r"(?s)(cannot fetch .*retrying in \d+ s.*){2}", 120)
        # Up again, but serving the wrong bytes: refused by sha256, retried.
        middle = len(stage3) // 2
        served.write_bytes(stage3[:middle] + bytes([stage3[middle] ^ 0xFF]) + stage3[middle + 1 :])
        lab.start_http()
        vm.wait_for(r"has sha256 [0-9a-f]{64}, not " + sha, 60)
        served.write_bytes(stage3)
        vm.wait_for(r"STAGE2-LOG-END", 90)
    finally:
        vm.stop()
    console = vm.console()
    local_log = console.split("STAGE2-LOG-BEGIN", 1)[1]
    # The failures were kept in stage 2's own log and handed to stage 3.
    assert "cannot fetch" in local_log and "has sha256" in local_log
    Poll(seconds=10)(
        "the failures in the master's log",
        lambda: "cannot fetch" in lab.syslog.read_text() or None,
    )
