"""A QEMU node PXE-boots from a real master: DHCP, TFTP, iPXE script, kernel, stage 2, enroll.

The master runs with ``[boot]`` (pool mode, RA on, TFTP on port 69) in a boot
network namespace (launcher.cluster.bootnet); the VM's NIC ROM is QEMU's iPXE. The node
is unknown at first: it gets a pool address and ``boot.ipxe`` over TFTP, its
script makes it pending and waits; ``beoctl node accept`` names it, its next
try boots Debian's kernel and the real stage 2 (built here for virtio-net),
whose syslog lines reach the master from the node's static address and land
under the node's name. Between accept and boot the VM still holds its pool
lease: the master gives no ticket to that address and tells iPXE to ask DHCP
again, which leases it the static address the ticket is given to. Stage 3 is a
stand-in whose /init tries to trade the boot ticket with busybox wget, which
cannot send from a privileged port: the master refuses it and the ticket stays
good (the real stage 3's launcher.node.boot binds one as root:
test_boot_e2e.py enrolls with it).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from bootsvc import newc, stage2
from launcher.cluster.qemu import VirtualNode, mac_for
from launcher.initialize import initialize
from launcher.state.bootimages import store_image
from launcher.state.db import transaction
from launcher.state.models import Event
from tests.integration.bootlab import boot_network, require_qemu, test_kernel
from tests.integration.bootmaster import node_of, start_master, stop_master
from tests.integration.vcluster import Poll

pytestmark = pytest.mark.slow
poll = Poll(seconds=240, interval=0.5)
ENROLL_INIT = """#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
. /run/beolaunch/boot.env
echo STAGE3-REACHED as $BEOLAUNCH_NAME at $BEOLAUNCH_ADDRESS
wget -q -O /enrolled --header 'Content-Type: application/json' \\
    --post-data "{\\"ticket\\": \\"$BEOLAUNCH_TICKET\\"}" \\
    "http://$BEOLAUNCH_MASTER:$BEOLAUNCH_HTTP/boot/enroll"
echo ENROLL-ANSWER $(cat /enrolled) END
poweroff -f
"""


def enrolling_stage3() -> bytes:
    busybox = Path("/bin/busybox").read_bytes()
    members = [newc.directory(d) for d in ("bin", "proc", "run")]
    members += [
        newc.regular("init", ENROLL_INIT.encode(), 0o755),
        newc.regular("bin/busybox", busybox, 0o755),
    ]
    applets = ("sh", "mount", "echo", "cat", "wget", "poweroff")
    members += [newc.symlink(f"bin/{a}", "busybox") for a in applets]
    return gzip.compress(newc.write(members), mtime=0)


def test_unknown_vm_pxe_boots_to_enrolled() -> None:
    require_qemu()
    kernel = test_kernel()
    top = Path(tempfile.mkdtemp(prefix="beolaunch-bootpxe-"))
    initialized = top / "template"
    initialize(initialized)
    with boot_network(73) as net:
        master_ip = str(net.master_address)
        boot = {
            "interface": net.bridge,
            "network": str(net.network),
            "master_address": master_ip,
            "mode": "pool",
            "pool_first": str(net.network.network_address + 100),
            "pool_last": str(net.network.network_address + 199),
            "ra": True,
        }
        m = start_master(initialized, top, boot, prefix=net.argv([]), tftp_port=69)
        vm = None
        try:
            engine = m.engine()
            with transaction(engine) as session:
                image, built = stage2.build_for_kernel(
                    kernel.modules_dir, [stage2.VIRTIO_NET_MODALIAS], Path("/bin/busybox")
                )
                state = m.config.state_dir
                store_image(session, state, kernel.vmlinuz, kind="kernel", name="k", built_from={})
                store_image(session, state, image, kind="stage2", name="s2", built_from=built)
                stage3 = enrolling_stage3()
                store_image(session, state, stage3, kind="stage3", name="s3", built_from={})
            engine.dispose()

            vm = VirtualNode("vm1", mac_for(1), net.add_tap("tap1"), top / "vm1.serial")
            vm.wrap = net.argv([])
            vm.start()
            started = time.monotonic()
            pending = poll("the VM pending", lambda: node_of(m, mac=vm.mac) if vm else None)
            assert pending.state == "pending" and pending.name is None
            vm.wait_for(r"waiting for: beoctl node accept", 60)
            assert "file=boot.ipxe" in m.log.read_text()  # iPXE came through TFTP

            waited = time.monotonic() - started
            assert m.beoctl("node", "accept", vm.mac, "--name", "n1") == 0
            accepted = time.monotonic()
            vm.wait_for(r"ENROLL-ANSWER.*END", 300)
            # Measured, not asserted (pytest -s shows it).
            print(f"pending after {waited:.1f} s; stage 3 {time.monotonic() - accepted:.1f} s")
            console = vm.console()
            static = str(net.network.network_address + 2)
            assert f"STAGE3-REACHED as n1 at {static}" in console
            master_log = m.log.read_text()
            # Its pool lease got no ticket, only word to renew it; the static one did.
            assert "node n1: no boot ticket for" in master_log and "renewing its DHCP" in master_log
            assert f"boot script node=n1 mac={vm.mac} client={static}" in master_log
            # wget's ephemeral port: refused, nothing spent, no token.
            assert f"boot enroll refused client={static}:" in master_log
            assert "enroll only from a privileged source port" in master_log
            node = node_of(m, name="n1")
            assert node is not None and node.token_sha256 is None
            assert node.boot_ticket_sha256 is not None  # still good for root on n1

            # Stage 2's syslog lines came from the static address: they are the node's.
            def stage2_lines() -> list[str]:
                engine = m.engine()
                try:
                    with transaction(engine, readonly=True) as session:
                        found = select(Event.message).where(
                            Event.node_id == node.id, Event.source == "syslog"
                        )
                        return list(session.scalars(found))
                finally:
                    engine.dispose()

            # Syslog lines are written in batches (every 1 s): wait for the one we want.
            def fetched_line() -> list[str] | None:
                lines = stage2_lines()
                return lines if any("stage 3 fetched" in line for line in lines) else None

            lines = poll("stage 2's 'stage 3 fetched' line under n1", fetched_line)
            assert all("stage2[n1]" in line for line in lines), lines
        finally:
            if vm is not None:
                vm.stop()
            stop_master(m)
    assert m.proc.returncode == 0, m.log.read_text()
    shutil.rmtree(top)
