"""The generated dnsmasq configuration under the real dnsmasq, and its supervisor.

``dnsmasq --test`` checks each mode's syntax; the supervisor tests run dnsmasq in a
network namespace of their own (``s9dh-*``, 10.231.5.0/24) with a veth pair whose far
end sits in a client namespace where busybox udhcpc asks for a lease as legacy PXE,
UEFI and iPXE would. dnsmasq and busybox come from ``make test``'s apt packages:
missing, these tests fail under CI and skip otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path

import pytest

from bootsvc.dhcp import DhcpHost, DhcpSettings, generate
from bootsvc.dnsmasq import DnsmasqSupervisor
from bootsvc.errors import DnsmasqError
from cachefs.atomicfile import replace_if_changed
from tests.integration.netns import dhcp_lease
from tests.integration.vcluster import Poll

NET = IPv4Network("10.231.5.0/24")
MASTER = IPv4Address("10.231.5.1")
MAC = "52:54:00:31:05:01"
URL = "http://10.231.5.1:8080/boot/${mac:hexhyp}.ipxe"
poll = Poll(seconds=10)


def _require(*programs: str, root: bool = False) -> None:
    missing = [p for p in programs if not shutil.which(p, path=os.environ["PATH"] + ":/usr/sbin")]
    reason = (
        f"needs {', '.join(missing)} (apt-get install dnsmasq busybox-static)" if missing else ""
    )
    if root and os.geteuid() != 0:
        reason = "needs root for network namespaces"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _settings(state: Path, interface: str = "dh0") -> DhcpSettings:
    return DhcpSettings(interface, NET, MASTER, state, URL)


@pytest.fixture
def state() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="beolaunch-dhcp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("mode", ["static", "pool", "proxy"])
def test_dnsmasq_accepts_each_mode(state: Path, mode: str) -> None:
    _require("dnsmasq")
    settings = dataclasses.replace(
        _settings(state),
        mode=mode,  # type: ignore[arg-type]
        pool=(IPv4Address("10.231.5.100"), IPv4Address("10.231.5.199")),
        ra_prefix=IPv6Network("fd00:231:5::/64"),
    )
    config = generate(settings, [DhcpHost("n1", MAC, IPv4Address("10.231.5.11"))])
    conf = state / "dnsmasq.conf"
    replace_if_changed(conf, config.conf)
    replace_if_changed(state / "dnsmasq.hosts", config.hosts)
    done = subprocess.run(
        [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--test", f"--conf-file={conf}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "syntax check OK" in done.stderr


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """A server namespace with dh0 (10.231.5.1/24) and a client one with its peer dh1."""
    _require("dnsmasq", "busybox", "ip", root=True)
    tag = secrets.token_hex(2)
    server, client = f"s9dh-{tag}-s", f"s9dh-{tag}-c"
    run = lambda *argv: subprocess.run(argv, check=True, capture_output=True)  # noqa: E731
    try:
        run("ip", "netns", "add", server)
        run("ip", "netns", "add", client)
        run(
            "ip", "-n", server, "link", "add", "dh0", "type", "veth", "peer", "dh1", "netns", client
        )
        run("ip", "-n", server, "addr", "add", f"{MASTER}/{NET.prefixlen}", "dev", "dh0")
        run("ip", "-n", server, "link", "set", "dh0", "up")
        run("ip", "-n", client, "link", "set", "dh1", "address", MAC, "up")
        yield server, client
    finally:
        for name in (server, client):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_supervised_dnsmasq_serves_leases_and_boot_files(
    state: Path, netns: tuple[str, str]
) -> None:
    server, client = netns
    supervisor = DnsmasqSupervisor(state, ("ip", "netns", "exec", server, "dnsmasq"))
    settings = _settings(state)
    try:
        n1 = DhcpHost("n1", MAC, IPv4Address("10.231.5.11"))
        assert supervisor.apply(generate(settings, [n1])) == "started"
        first_pid = supervisor.pid
        assert first_pid is not None
        poll("dnsmasq listening", lambda: "bound exclusively" in supervisor.log.read_text())

        legacy = dhcp_lease(client, "dh1", state)
        assert legacy == {"ip": "10.231.5.11", "boot_file": "undionly.kpxe", "siaddr": str(MASTER)}
        uefi = dhcp_lease(client, "dh1", state, "-x", "93:0007")
        assert uefi["boot_file"] == "ipxe.efi"
        ipxe = dhcp_lease(client, "dh1", state, "-x", "77:69505845")  # user class "iPXE"
        assert ipxe["boot_file"] == URL

        # A lease change only: SIGHUP to the same process, which re-reads the hosts file.
        moved = dataclasses.replace(n1, address=IPv4Address("10.231.5.12"))
        assert supervisor.apply(generate(settings, [moved])) == "reloaded"
        assert supervisor.pid == first_pid
        poll(
            "hosts re-read",
            lambda: supervisor.log.read_text().count("read " + str(supervisor.hosts)) >= 2,
        )
        assert dhcp_lease(client, "dh1", state)["ip"] == "10.231.5.12"

        assert supervisor.apply(generate(settings, [moved])) == "unchanged"
        assert supervisor.pid == first_pid

        # Any other change: a restart, with a new process.
        longer = dataclasses.replace(settings, lease_time="1h")
        assert supervisor.apply(generate(longer, [moved])) == "restarted"
        assert supervisor.pid not in (None, first_pid)
    finally:
        supervisor.stop()
    assert supervisor.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)


def test_supervisor_reports_a_dnsmasq_that_cannot_start(
    state: Path, netns: tuple[str, str]
) -> None:
    server, _ = netns
    supervisor = DnsmasqSupervisor(state, ("ip", "netns", "exec", server, "dnsmasq"))
    with pytest.raises(DnsmasqError, match="exited with status") as caught:
        supervisor.apply(generate(_settings(state, interface="nosuch0"), []))
    assert "unknown interface nosuch0" in supervisor.log.read_text()
    assert caught.value.command.endswith("dnsmasq")
    assert supervisor.pid is None


def test_supervisor_names_a_missing_program(state: Path) -> None:
    supervisor = DnsmasqSupervisor(state, ("/nonexistent/dnsmasq",))
    with pytest.raises(DnsmasqError, match=r"cannot run.*install dnsmasq"):
        supervisor.apply(generate(_settings(state), []))
