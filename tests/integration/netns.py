"""Run test code inside a network namespace the test made: a thread that setns()es.

``setns(fd, CLONE_NEWNET)`` moves only the calling thread (network namespaces
may be entered by one thread of many), and a socket stays in the namespace it
was created in. So each call gets a thread of its own, which enters the
namespace, runs the function (its sockets: urllib, aiohttp, the node's enroll
client) and ends. Python 3.11 has no ``os.setns``: libc's, through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    """Where ``ip netns add NAME`` keeps the namespace."""
    return Path("/run/netns") / name


def call_in_netns(name: str, fn: Callable[[], T]) -> T:
    """``fn()`` run by a thread inside network namespace ``name``; its result or its
    exception. Raises OSError when the namespace cannot be entered."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns into {name}: {os.strerror(code)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def dhcp_lease(client: str, iface: str, out_dir: Path, *extra: str) -> dict[str, str]:
    """What busybox udhcpc on ``iface`` in namespace ``client`` was offered: ip,
    boot_file, siaddr (its script writes them to a file in ``out_dir``); ``extra`` are
    more udhcpc options. Fails when udhcpc got no lease."""
    script = out_dir / "udhcpc.sh"
    out = out_dir / "udhcpc.out"
    out.unlink(missing_ok=True)
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = bound ] && printf "ip=%s\\nboot_file=%s\\nsiaddr=%s\\n"'
        f' "$ip" "$boot_file" "$siaddr" > {out}\nexit 0\n'
    )
    script.chmod(0o755)
    argv = ["ip", "netns", "exec", client, "busybox", "udhcpc", "-i", iface, "-f", "-q", "-n"]
    argv += ["-t", "5", "-T", "1", "-s", str(script), *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in out.read_text().splitlines())
