"""The router advertisement sender on a real bridge, heard from another namespace."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from ipaddress import IPv4Network

import pytest

from bootsvc.errors import RouterAdvertError
from launcher.cluster.bootnet import BootNetwork
from launcher.cluster.netns import ip

LISTENER = """
import socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(20)
while True:
    data, addr = s.recvfrom(1500)
    if data[0] == 134:
        print(addr[0], data.hex(), flush=True)
        break
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_an_advertisement_reaches_a_host_on_the_bridge() -> None:
    net = BootNetwork(f"ra-{secrets.token_hex(3)}", IPv4Network("10.234.90.0/24"))
    peer = f"rap-{secrets.token_hex(3)}"
    net.create()
    try:
        ip("netns", "add", peer)
        ip("link", "add", "ra-a", "type", "veth", "peer", "name", "ra-b", netns=net.netns)
        ip("link", "set", "ra-b", "netns", peer, netns=net.netns)
        ip("link", "set", "ra-a", "master", net.bridge, "up", netns=net.netns)
        ip("link", "set", "ra-b", "up", netns=peer)
        listener = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{peer}", "--", sys.executable, "-c", LISTENER],
            stdout=subprocess.PIPE,
            text=True,
        )
        sender = subprocess.Popen(
            net.argv(
                [
                    sys.executable,
                    "-c",
                    "import time; from bootsvc.ra import RouterAdvertiser as R\n"
                    "with R('br0', 0.2) as r: time.sleep(15)",
                ]
            ),
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        )
        try:
            out, _ = listener.communicate(timeout=25)
        finally:
            sender.kill()
            sender.wait()
        source, payload = out.split()
        assert source.startswith("fe80:")  # from the bridge's link-local address
        msg = bytes.fromhex(payload)
        assert msg[0] == 134 and msg[6:8] == b"\0\0"  # router lifetime 0
    finally:
        subprocess.run(["ip", "netns", "del", peer], capture_output=True)
        net.remove()


def test_an_unknown_interface_is_named() -> None:
    with pytest.raises(RouterAdvertError, match="nope0: no such interface"):
        from bootsvc.ra import RouterAdvertiser

        RouterAdvertiser("nope0")
