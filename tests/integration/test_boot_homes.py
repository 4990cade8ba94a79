"""End to end: PXE-booted QEMU nodes mount the users' homes from the master over NFS.

The master's ``[nfs]`` exports ``/home`` (``beoctl nfs apply``: nfs-ganesha,
NFSv4, root_squash, only the lab's network) and stage 3 mounts it at
``/home`` before its agent registers (the default ``[[boot.mounts]]``). A
user submits from a directory in their home; the job on the booted node
reads its input there and writes its results there, and the user sees them
on the master, owned by them. The node's kernel NFS client and ganesha are
the real ones; nothing is shared with the host but the network.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.cluster.vmlab import VmLab
from launcher.errors import ClusterProcessError
from launcher.master.nodehealth import HEALTH_REASON
from tests.integration import vcluster as vc
from tests.integration.bootlab import booted_lab

pytestmark = pytest.mark.slow
BOOT_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def lab() -> Iterator[VmLab]:
    # allow_root: one job runs as root to show root is nobody on the filer.
    with booted_lab(
        "beoboot-homes-", "bh", 86, exports=("/home",), jobs={"allow_root": True}
    ) as lab:
        yield lab


@pytest.fixture(scope="module")
def alice() -> Iterator[vc.User]:
    with vc.home_user("beoha") as user:
        yield user


@pytest.fixture(scope="module")
def bob() -> Iterator[vc.User]:
    with vc.home_user("beohb") as user:
        secret = Path(user.home) / "secret.txt"
        secret.write_text("bob's\n")
        os.chown(secret, user.uid, user.gid)
        secret.chmod(0o600)
        yield user


def submit(lab: VmLab, user: str, cwd: Path, script: str, nodes: int = 1) -> tuple[int, str]:
    """``beosub -N NODES -- /bin/sh -c SCRIPT`` as ``user`` from ``cwd``: exit code, output."""
    argv = ("beosub", "-N", str(nodes), "--", "/bin/sh", "-c", script)
    try:
        return 0, lab.run(*argv, user=user, cwd=cwd)
    except ClusterProcessError as exc:
        return 1, str(exc)


def test_a_job_from_a_home_directory_reads_and_writes_there_as_its_user(
    lab: VmLab, alice: vc.User, bob: vc.User
) -> None:
    vm = lab.add_node(1)
    vm.start()
    up = lab.wait_up([vm.name], BOOT_TIMEOUT_S)
    print(f"{vm.name} up {up[vm.name]:.1f} s after power-on, /home mounted")  # pytest -s
    source = f"{lab.net.master_address}:/home"
    console = vm.console()
    assert f"mounted {source} at /home (nfs4, " in console
    assert not re.search(r"insmod \S+ failed", console)  # every module stage 3 carries loaded
    log = lab.run("beoctl", "node", "log", vm.name)
    assert f"mounted {source} at /home" in log and f"addr={lab.net.master_address}" in log
    master_log = (lab.state / "master.log").read_text()
    assert "booted nodes mount {master}:/home at /home" not in master_log  # filled in
    assert f"booted nodes mount {source} at /home" in master_log
    assert "no NFS server runs" not in master_log

    run = Path(alice.home) / "run"
    run.mkdir()
    (run / "input.dat").write_text("3\n1\n2\n")
    for path in (run, run / "input.dat"):
        os.chown(path, alice.uid, alice.gid)
    code, out = submit(
        lab, alice.name, run,
        "sort -n input.dat > sorted.txt && mkdir results && hostname > results/where && pwd",
    )  # fmt: skip
    assert code == 0, out
    assert out.strip() == str(run)  # its cwd on the node is the submit directory
    assert (run / "sorted.txt").read_text() == "1\n2\n3\n"
    assert (run / "results" / "where").read_text().strip() == vm.name
    for made in (run / "sorted.txt", run / "results", run / "results" / "where"):
        assert (made.stat().st_uid, made.stat().st_gid) == (alice.uid, alice.gid), made

    # Alice's job is alice on the filer: bob's 0700 home stays closed to it.
    code, out = submit(lab, alice.name, run, f"cat {bob.home}/secret.txt")
    assert code != 0 and "Permission denied" in out, out
    # Root on the node is nobody on the filer (root_squash): no write in alice's dir.
    code, out = submit(lab, "root", run, f"echo x > {run}/from-root")
    assert code != 0 and "Permission denied" in out, out
    assert not (run / "from-root").exists()


def test_a_node_whose_mount_fails_stays_out_with_the_reason_until_the_export_is_fixed(
    lab: VmLab, alice: vc.User
) -> None:
    elsewhere = Path(tempfile.mkdtemp(prefix="beoboot-export-"))
    try:
        lab.set_exports([str(elsewhere)])  # /home no longer exported: the mount fails
        vm = lab.add_node(2)
        vm.start()
        reason = poll_reason(lab, vm.name, BOOT_TIMEOUT_S)
        assert reason.startswith(HEALTH_REASON + "mount /home failed:"), reason
        listed = lab.run("beoctl", "node", "list")
        assert "mount /home failed" in listed, listed
        log = lab.run("beoctl", "node", "log", vm.name)
        assert "mount /home failed: No such file or directory (the export is not there" in log
        lab.set_exports(["/home"])  # fixed: the node's retry mounts it and it comes in
        fixed = time.monotonic()
        lab.wait_up([vm.name], 120)
        print(f"{vm.name} in {time.monotonic() - fixed:.1f} s after the export was fixed")
        # Both nodes now: each writes a file named for itself in alice's home.
        code, out = submit(lab, alice.name, Path(alice.home), 'hostname > "at-$(hostname)"', 2)
        assert code == 0, out
        assert (Path(alice.home) / f"at-{vm.name}").read_text().strip() == vm.name
    finally:
        lab.set_exports(["/home"])
        shutil.rmtree(elsewhere, ignore_errors=True)


def poll_reason(lab: VmLab, name: str, timeout: float) -> str:
    """``name``'s drain reason once it is drained (the node said why)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in lab.json("beoctl", "node", "list"):
            if row.get("name") == name and row.get("state") == "drained":
                return str(row.get("reason") or row.get("state_reason") or "")
        time.sleep(1)
    raise AssertionError(f"{name} was not drained within {timeout:.0f} s")
