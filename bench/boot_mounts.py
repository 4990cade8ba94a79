"""Boot with /home from the master over NFS: power-on to registered, with and without the mount.

Real parts: QEMU (TCG, no KVM) nodes PXE boot from the real master in a lab of
their own (launcher.cluster.vmlab); the master serves ``/home`` with
nfs-ganesha (``beoctl nfs apply``) and stage 3 mounts it with the kernel's
NFSv4 client before its agent registers. "Registered" is the master marking
the node ``up``.

Baseline, in the same run and lab: the same boot with ``[[boot.mounts]]``
set to an empty list (the master restarted in between), so the node mounts
nothing. Boots alternate, with and without, :data:`ROUNDS` times each, one
node at a time; the figure and baseline are the medians.
"""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import tomllib
from pathlib import Path

import tomli_w

from bench.boot import node_kernel
from bench.record import report
from launcher.cluster.vmlab import VmLab

TIMEOUT_S = 600
ROUNDS = 2


def _say(line: str) -> None:
    print(f"  boot_mounts: {line}", file=sys.stderr, flush=True)


def _set_mounts(lab: VmLab, mount: bool) -> None:
    """The lab's ``[boot]`` with the default mounts (each export) or none; master restarted."""
    doc = tomllib.loads(lab.config.read_text())
    if mount:
        doc["boot"].pop("mounts", None)
    else:
        doc["boot"]["mounts"] = []
    lab.config.write_text(tomli_w.dumps(doc))
    lab.stop_master()
    lab.start_master()


def _boot(lab: VmLab, index: int) -> float:
    vm = lab.add_node(index)
    vm.start()
    try:
        return lab.wait_up([vm.name], TIMEOUT_S)[vm.name]
    finally:
        vm.stop()


def main() -> None:
    deb = node_kernel("boot_mounts")
    if deb is None:
        return
    state = Path(tempfile.mkdtemp(prefix="beobench-mounts-"))
    lab = VmLab.create(state, f"bm-{secrets.token_hex(3)}", 82, say=_say)
    with_mount: list[float] = []
    without: list[float] = []
    try:
        lab.setup(deb, exports=("/home",))
        index = 1
        for _ in range(ROUNDS):
            for mount, into in ((False, without), (True, with_mount)):
                _set_mounts(lab, mount)
                into.append(_boot(lab, index))
                _say(f"node {index} {'with' if mount else 'without'} /home: {into[-1]:.1f} s")
                index += 1
        log = lab.run("beoctl", "node", "log", f"vm{index - 1}")
        mounted = [line for line in log.splitlines() if "mounted" in line]
        _say(mounted[-1] if mounted else "no 'mounted' line in the last node's log")
    finally:
        lab.close()
        lab.remove_state()
    report(
        "boot_with_home_mount",
        statistics.median(with_mount),
        statistics.median(without),
        "s",
        "the NFS mount adds under 10% to power-on-to-registered",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
