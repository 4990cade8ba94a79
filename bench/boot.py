"""Boot: power-on to registered, one node and storms of 2 and 4, and bytes served per node.

Real parts throughout: QEMU (TCG, no KVM) nodes with virtio NICs PXE boot from
the real master (dnsmasq, tftpy, boot HTTP) on a boot network of their own
(launcher.cluster.vmlab); the kernel is Debian's, stage 2 and stage 3 come from
the real builders. "Registered" is the master marking the node ``up``, i.e. the
stage-3 agent's hello arrived.

Baseline, in the same run: the same nodes booting one large initramfs with
stage 3 packed in (bootsvc.stage2.pack_baseline), as single-image systems
(Warewulf-style) do, fetched the same way (iPXE over HTTP).

Two guests on two cores show what the master does with a storm; four queue
for the host's cores, so the four-node storm is also set against its guests'
CPU seconds divided by the cores (the fastest it could be on this machine).

Bytes per node: TFTP from the master's transfer log lines, HTTP from the
image sizes its per-node script names, and everything the node received on
the wire from its tap's counters.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.record import report
from bootsvc.images import image_path
from bootsvc.stage2 import pack_baseline
from launcher import config as cfg
from launcher.cluster.vmlab import VmLab
from launcher.state.bootimages import store_image
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import BootImage

KERNEL_DIR = Path("/var/cache/beolaunch/kernel")
TIMEOUT_S = 600
CORES = os.cpu_count() or 1


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _say(line: str) -> None:
    print(f"  boot: {line}", file=sys.stderr, flush=True)


def _wire_bytes(lab: VmLab, tap: str) -> int:
    out = subprocess.run(
        ["ip", "-n", lab.net.netns, "-s", "-j", "link", "show", tap],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])  # host -> VM


def _tftp_bytes(lab: VmLab, since: int) -> dict[str, int]:
    """Bytes per client address of the TFTP transfers logged after offset ``since``."""
    text = (lab.state / "master.log").read_text("utf-8", "replace")[since:]
    found: dict[str, int] = {}
    for client, nbytes in re.findall(
        r"tftp transfer client=([\d.]+)\S* file=\S+ bytes=(\d+)", text
    ):
        found[client] = found.get(client, 0) + int(nbytes)
    return found


def _images(lab: VmLab) -> dict[str, BootImage]:
    engine = open_engine(cfg.load(str(lab.config)).database_url)
    try:
        with transaction(engine, readonly=True) as session:
            rows = session.query(BootImage).all()
            return {row.name: row for row in rows}
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Boot:
    """One power-on of ``count`` nodes at once, per node: seconds to registered,
    TFTP bytes, bytes received on the wire, and the QEMU process's CPU seconds
    until all were registered (what the emulated boot cost the host's cores)."""

    up: list[float]
    tftp: list[int]
    wire: list[int]
    cpu: list[float]


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _boot(lab: VmLab, first: int, count: int, stage2_name: str) -> Boot:
    """Power on ``count`` nodes at once and wait until every one registered."""
    log = lab.state / "master.log"
    since = log.stat().st_size if log.exists() else 0
    vms = [lab.add_node(first + i) for i in range(count)]
    for vm in vms:  # explicitly: the newest stage 2 is the baseline's
        lab.run("beoctl", "boot", "assign", vm.name, stage2_name)
    for vm in vms:
        vm.start()
    up = lab.wait_up([vm.name for vm in vms], TIMEOUT_S)
    cpu = [_cpu_seconds(vm.process.pid) for vm in vms if vm.process is not None]
    wire = [_wire_bytes(lab, vm.tap) for vm in vms]
    addresses = {row["name"]: row["address"] for row in lab.json("beoctl", "node", "list")}
    tftp = _tftp_bytes(lab, since)
    for vm in vms:
        vm.stop()
    return Boot(
        [up[vm.name] for vm in vms],
        [tftp.get(addresses[vm.name] or "", 0) for vm in vms],
        wire,
        cpu,
    )


def node_kernel(bench: str) -> Path | None:
    """The newest Debian kernel .deb ``.ci/kernel-fetch`` left; None, said, without one."""
    if not (KERNEL_DIR / ".complete").exists():
        print(f"{bench}: skipped: no node kernel in {KERNEL_DIR} (make bench fetches it)")
        return None
    return sorted(KERNEL_DIR.glob("*.deb"))[-1]


def main() -> None:
    deb = node_kernel("boot")
    if deb is None:
        return
    state = Path(tempfile.mkdtemp(prefix="beobench-boot-"))
    lab = VmLab.create(state, f"bb-{secrets.token_hex(3)}", 81, say=_say)
    try:
        lab.setup(deb)
        images = _images(lab)
        kernel = max((i for i in images.values() if i.kind == "kernel"), key=lambda i: i.created_at)
        s2 = max((i for i in images.values() if i.kind == "stage2"), key=lambda i: i.created_at)
        s3 = max((i for i in images.values() if i.kind == "stage3"), key=lambda i: i.created_at)
        # The baseline packs the same stage 3 members; the kernel unpacks them (cpio).
        cpio = state / "stage3.cpio.gz"
        lab.run("beoctl", "boot", "build-stage3", "--format", "cpio", "--out", str(cpio))
        packed = pack_baseline(image_path(state, s2.sha256).read_bytes(), cpio.read_bytes())
        engine = open_engine(cfg.load(str(lab.config)).database_url)
        with transaction(engine) as session:
            store_image(
                session,
                state,
                packed,
                kind="stage2",
                name="baseline-packed",
                built_from={
                    "baseline": "stage 3 packed into stage 2",
                    "stage2": s2.sha256,
                    "stage3": s3.sha256,
                },
            )
        engine.dispose()
        ours_http = kernel.size + s2.size + s3.size
        base_http = kernel.size + len(packed)
        _say(
            f"images: kernel {kernel.size}, stage 2 {s2.size}, stage 3 {s3.size}, "
            f"packed {len(packed)} bytes"
        )

        started = time.monotonic()
        one = _boot(lab, 1, 1, s2.name)
        _say(f"1 node: registered after {one.up[0]:.1f} s, {one.cpu[0]:.1f} CPU s")
        # Two guests on two cores: what the master does with a storm, without
        # the guests queueing for the host's CPUs.
        two = _boot(lab, 2, 2, s2.name)
        _say(f"2 nodes at once: {_seconds(two.up)} s")
        four = _boot(lab, 4, 4, s2.name)
        floor = sum(four.cpu) / CORES
        _say(
            f"4 nodes at once: {_seconds(four.up)} s; their emulation took "
            f"{_seconds(four.cpu)} CPU s: at least {floor:.1f} s on {CORES} cores"
        )
        base_one = _boot(lab, 8, 1, "baseline-packed")
        _say(f"baseline, 1 node: registered after {base_one.up[0]:.1f} s")
        base_four = _boot(lab, 9, 4, "baseline-packed")
        _say(f"baseline, 4 nodes at once: {_seconds(base_four.up)} s")
        _say(f"all boots took {time.monotonic() - started:.0f} s")
    finally:
        lab.close()
        lab.remove_state()

    report(
        "boot_one_node_to_registered",
        one.up[0],
        base_one.up[0],
        "s",
        "as fast as the single-initramfs baseline or faster",
        higher_is_better=False,
    )
    report(
        "boot_storm_4_nodes",
        max(four.up),
        one.up[0],
        "s",
        "4 nodes at once < 1.5x one node (ratio > 0.667)",
        higher_is_better=False,
    )
    report(
        "boot_storm_2_nodes",
        max(two.up),
        one.up[0],
        "s",
        f"for comparison: 2 guests on {CORES} cores, no queueing for CPUs",
        higher_is_better=False,
    )
    report(
        "boot_storm_4_nodes_cpu_floor",
        max(four.up),
        sum(four.cpu) / CORES,
        "s",
        "for comparison: the storm against its guests' CPU seconds / host cores",
        higher_is_better=False,
    )
    report(
        "boot_storm_4_nodes_baseline",
        max(base_four.up),
        base_one.up[0],
        "s",
        "for comparison: the baseline's storm vs its one node",
        higher_is_better=False,
    )
    report(
        "boot_tftp_bytes_per_node",
        max(one.tftp + two.tftp + four.tftp) or 1,
        len(packed),
        "bytes",
        "TFTP bytes per node < 1/10 of the baseline's initramfs (ratio > 10)",
        higher_is_better=False,
    )
    report(
        "boot_http_bytes_per_node",
        ours_http,
        base_http,
        "bytes",
        "about the same: stage 3 moves from the initramfs to stage 2's fetch",
        higher_is_better=False,
    )
    report(
        "boot_wire_bytes_per_node",
        one.wire[0],
        base_one.wire[0],
        "bytes",
        "what the node received in all, for comparison",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
