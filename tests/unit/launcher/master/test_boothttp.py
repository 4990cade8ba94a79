"""The iPXE scripts the boot service writes: exact text."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from launcher.master.boothttp import BootHttpSettings, boot_ipxe, boot_script, waiting_script

SETTINGS = BootHttpSettings(
    state_dir=Path("/var/lib/beolaunch"),
    http=("0.0.0.0", 4873),
    logs_port=4872,
    control=("0.0.0.0", 4870),
    peer_port=4874,
    master_address="10.77.0.1",
)


def test_boot_ipxe_chains_to_the_nodes_own_script_and_asks_again_when_refused() -> None:
    # A 429/503 for a new MAC, or a master away, must not drop iPXE to the firmware.
    assert boot_ipxe("10.77.0.1", 4873) == (
        "#!ipxe\n"
        ":retry\n"
        "chain http://10.77.0.1:4873/boot/${mac:hexhyp}.ipxe || goto wait\n"
        ":wait\n"
        "echo Beolaunch: no boot script from 10.77.0.1:4873; asking again\n"
        "sleep 5\n"
        "goto retry\n"
    )


def test_the_waiting_script_says_why_and_retries() -> None:
    assert waiting_script("10.77.0.1", 4873, "node 52:54:00:12:34:56 waits ${x}") == (
        "#!ipxe\n"
        "echo Beolaunch: node 52:54:00:12:34:56 waits ??x?\n"
        ":retry\n"
        "sleep 5\n"
        "chain http://10.77.0.1:4873/boot/${mac:hexhyp}.ipxe || goto retry\n"
    )


def test_the_renewing_waiting_script_asks_dhcp_before_each_retry() -> None:
    # A node accepted while it held a pool address gets its static lease only by asking.
    assert waiting_script("10.77.0.1", 4873, "not from its address", renew=True) == (
        "#!ipxe\n"
        "echo Beolaunch: not from its address\n"
        ":retry\n"
        "sleep 5\n"
        "dhcp || goto retry\n"
        "chain http://10.77.0.1:4873/boot/${mac:hexhyp}.ipxe || goto retry\n"
    )


def _image(sha: str) -> Any:
    return SimpleNamespace(sha256=sha * 64)


def test_the_boot_script_names_the_images_and_the_ticket() -> None:
    images = {"kernel": _image("a"), "stage2": _image("b"), "stage3": _image("c")}
    text = boot_script(SETTINGS, "10.77.0.1", "n7", "TICKET", images)
    base = "http://10.77.0.1:4873/boot/images"
    assert text == (
        "#!ipxe\n"
        f"kernel {base}/{'a' * 64} initrd=stage2 console=ttyS0 panic=-1 "
        "beolaunch.master=10.77.0.1 beolaunch.http=4873 beolaunch.logs=4872 "
        f"beolaunch.name=n7 beolaunch.ticket=TICKET beolaunch.stage3={'c' * 64}\n"
        f"initrd --name stage2 {base}/{'b' * 64}\n"
        "boot\n"
    )


def test_extra_kernel_args_come_last() -> None:
    images = {"kernel": _image("a"), "stage2": _image("b"), "stage3": _image("c")}
    settings = BootHttpSettings(**{**SETTINGS.__dict__, "extra_kernel_args": "quiet"})
    kernel = boot_script(settings, "10.77.0.1", "n7", "T", images).splitlines()[1]
    assert kernel.endswith(f"beolaunch.stage3={'c' * 64} quiet")
