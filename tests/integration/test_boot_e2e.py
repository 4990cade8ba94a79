"""End to end: QEMU nodes PXE boot from the real master into the real stage 3 and run jobs.

Everything is the product's: the master (dnsmasq, tftpy, boot HTTP, logs,
control, objects) in a boot network of the lab's own (launcher.cluster.vmlab),
Debian's kernel imported from its .deb, stage 2 and stage 3 from the builders,
the node agent in stage 3 enrolling with its boot ticket. A job is submitted
with ``beosub`` by an ordinary user and runs on the VM. The second test stops
the master while a node is between stage 2's download and its DHCP: the node
keeps retrying, logs locally, and comes up once the master is back.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from launcher import config as cfg
from launcher.cluster.vmlab import VmLab
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Node
from tests.integration import vcluster as vc
from tests.integration.bootlab import booted_lab

pytestmark = pytest.mark.slow
BOOT_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def lab() -> Iterator[VmLab]:
    with booted_lab("beoboot-e2e-", "be", 83) as lab:
        yield lab


@pytest.fixture(scope="module")
def user() -> Iterator[str]:
    name = f"beoboot{secrets.token_hex(2)}"
    vc.add_user(name, home=False)
    try:
        yield name
    finally:
        vc.remove_user(name, home=False)


def node_row(lab: VmLab, name: str) -> Node:
    engine = open_engine(cfg.load(str(lab.config)).database_url)
    try:
        with transaction(engine, readonly=True) as session:
            node = session.scalars(select(Node).where(Node.name == name)).one()
            session.expunge(node)
            return node
    finally:
        engine.dispose()


def test_a_pxe_booted_node_registers_with_its_hardware_and_runs_a_job(
    lab: VmLab, user: str
) -> None:
    vm = lab.add_node(1)
    vm.start()
    lab.wait_up([vm.name], BOOT_TIMEOUT_S)
    # Stage 2 really switched into stage 3 (no packed baseline here).
    assert "switching to stage 3" in vm.console()

    work = Path(tempfile.mkdtemp(prefix="beoboot-work-"))
    try:
        work.chmod(0o755)
        out = lab.run(
            "beosub", "-N", "1", "--", "/bin/sh", "-c",
            "read h < /proc/sys/kernel/hostname; echo hello from $h",
            user=user, cwd=work,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert out.strip() == f"hello from {vm.name}"  # stage 3 sets the node's hostname

    node = node_row(lab, vm.name)
    hardware = node.hardware or {}
    assert hardware.get("cpus_logical") == 1  # -smp 1
    assert 900 << 20 < hardware.get("memory_bytes", 0) <= 1024 << 20  # -m 1024
    nics = [n for n in hardware.get("nics", []) if n.get("mac") == vm.mac]
    assert nics and nics[0]["driver"] == "virtio_net"
    assert node.address is not None and node.address in lab.run("beoctl", "node", "list")

    log = lab.run("beoctl", "node", "log", vm.name)
    # From stage 2's first line (sent once it had an address) to the agent.
    assert "(before network)" in log and "stage 3 fetched" in log
    assert "enrolled as" in log and "registered with the master" in log
    assert "beolaunch.ticket=(hidden)" in log and not re.search(r"ticket=[A-Za-z0-9_-]{20}", log)


def test_a_node_whose_master_is_down_keeps_trying_and_comes_up_when_it_returns(
    lab: VmLab,
) -> None:
    log = lab.state / "master.log"
    since = log.stat().st_size
    vm = lab.add_node(2)
    vm.start()
    # Wait for the stage-2 download to finish, then take the master away
    # (with it dnsmasq, TFTP, the image service and the log service).
    stage2 = next(i for i in lab.json("beoctl", "boot", "images") if i["kind"] == "stage2")
    served = re.compile(rf"boot image client=\S+ image={stage2['sha256']} bytes=\d+ \S+ complete")
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while not served.search(log.read_text()[since:]):
        assert time.monotonic() < deadline, "stage 2 was never served"
        time.sleep(0.1)
    lab.stop_master()
    vm.wait_for(r"retrying in \d+ s(.|\n)*retrying in \d+ s", 120)
    assert "switching to stage 3" not in vm.console()
    lab.start_master()
    lab.wait_up([vm.name], BOOT_TIMEOUT_S)
    console = vm.console()
    assert re.search(r"no DHCP answer; retrying|cannot fetch .* retrying", console)
    # What stage 2 logged while the master was away reached it afterwards.
    node_log = lab.run("beoctl", "node", "log", vm.name)
    assert "retrying in" in node_log
