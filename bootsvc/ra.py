"""A bare IPv6 router advertisement on the cluster interface, so iPXE does not wait for IPv6.

iPXE configures IPv4 (DHCP) and IPv6 (SLAAC) together and waits about 16 s for
a router advertisement when none comes (../shared/notes/pxe-boot-under-qemu.md:
a PXE boot to a stage-2 shell went from 23.8 s to 8 s with one). The
advertisement sent here says only "there is no IPv6 router": router lifetime 0,
no prefix, no managed/other flags. It needs no IPv6 address on the interface
beyond its link-local one, unlike dnsmasq's ``enable-ra``, which needs a prefix.

Sent to all nodes (ff02::1) every ``interval`` seconds from a thread; ICMPv6 raw
sockets get their checksum from the kernel, and RFC 4861 requires hop limit 255.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import threading

from bootsvc.errors import RouterAdvertError

ALL_NODES = "ff02::1"
#: ICMPv6 type of a router advertisement (RFC 4861 4.2).
ROUTER_ADVERT = 134
#: ioctl: an interface's hardware address (struct ifreq: name, then sockaddr).
SIOCGIFHWADDR = 0x8927
#: Option: source link-layer address.
OPT_SOURCE_LLADDR = 1


def advertisement(mac: bytes) -> bytes:
    """The ICMPv6 message (checksum 0: the kernel fills it): no router, no prefix."""
    header = struct.pack(
        "!BBHBBHII",
        ROUTER_ADVERT,
        0,  # code
        0,  # checksum, by the kernel
        64,  # current hop limit
        0,  # flags: no managed, no other configuration
        0,  # router lifetime 0: not a default router
        0,  # reachable time: unspecified
        0,  # retransmit timer: unspecified
    )
    if len(mac) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
    return header + struct.pack("!BB", OPT_SOURCE_LLADDR, 1) + mac


def _mac_of(interface: str) -> bytes:
    # SIOCGIFHWADDR on a socket asks this process's network namespace; /sys/class/net
    # may be another namespace's view (``nsenter --net`` does not remount /sys).
    request = struct.pack("16s16x", interface.encode())
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            answer = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, request)
    except OSError as exc:
        raise RouterAdvertError(interface, f"cannot read its MAC address ({exc})") from exc
    return answer[18:24]


class RouterAdvertiser:
    """Sends :func:`advertisement` on ``interface`` every ``interval`` s until :meth:`stop`."""

    def __init__(self, interface: str, interval: float = 1.0) -> None:
        self.interface = interface
        self.interval = interval
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._index = socket.if_nametoindex(interface)
        except OSError as exc:
            raise RouterAdvertError(interface, "no such interface") from exc
        self._message = advertisement(_mac_of(interface))
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except OSError as exc:
            raise RouterAdvertError(interface, f"cannot open a raw ICMPv6 socket ({exc})") from exc
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self._index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        self._sock = sock

    def send_once(self) -> bool:
        """One advertisement; False when the interface cannot send yet (no link-local
        address while it has no carrier or is still in DAD)."""
        try:
            self._sock.sendto(self._message, (ALL_NODES, 0, 0, self._index))
        except OSError:
            return False
        self.sent += 1
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.send_once()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ra-{self.interface}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1.0)
        self._sock.close()

    def __enter__(self) -> RouterAdvertiser:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
