"""The hardware report a node agent sends when it registers (psutil + sysfs)."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

import psutil

SYS_NET = Path("/sys/class/net")


def _nic_driver(name: str, sys_net: Path) -> str | None:
    """The kernel driver bound to interface ``name`` (None for virtual ones: lo, veth...)."""
    try:
        return os.path.basename(os.readlink(sys_net / name / "device" / "driver"))
    except OSError:
        return None


def hardware_report(sys_net: Path = SYS_NET) -> dict[str, Any]:
    """CPUs, memory, NICs (address, MAC, speed, driver), kernel and load, as plain JSON data."""
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    nics = []
    for name in sorted(addrs):
        mac = next((a.address for a in addrs[name] if a.family == psutil.AF_LINK), None)
        ipv4 = [a.address for a in addrs[name] if a.family == socket.AF_INET]
        st = stats.get(name)
        nics.append(
            {
                "name": name,
                "mac": mac,
                "ipv4": ipv4,
                "up": bool(st and st.isup),
                "speed_mbps": st.speed if st else None,
                "mtu": st.mtu if st else None,
                "driver": _nic_driver(name, sys_net),
            }
        )
    freq = psutil.cpu_freq()
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus_logical": psutil.cpu_count(logical=True),
        "cpus_physical": psutil.cpu_count(logical=False),
        "cpu_mhz_max": round(freq.max) if freq and freq.max else None,
        "memory_bytes": psutil.virtual_memory().total,
        "load": list(os.getloadavg()),
        "nics": nics,
    }
