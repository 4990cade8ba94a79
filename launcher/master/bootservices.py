"""The master's DHCP and TFTP, run when the config has a ``[boot]`` table.

At start: the TFTP root ``STATE/boot/tftp`` gets ``boot.ipxe`` (chains to the
boot HTTP service) and the iPXE binaries copied from ``[boot] ipxe_dir``; the
TFTP server (:mod:`bootsvc.tftp`) runs in its thread; dnsmasq
(:mod:`bootsvc.dnsmasq`) is started on the configuration generated from the
accepted nodes; a bare IPv6 router advertisement is sent when ``ra`` is on.
While running, a cheap fingerprint of the accepted nodes (name, MAC, address)
is read every :data:`WATCH_S` seconds and dnsmasq's hosts file rewritten (and
dnsmasq sent SIGHUP) when it changed, or dnsmasq restarted when it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

from sqlalchemy import Engine, select

from bootsvc.dhcp import DnsmasqConfig, generate, hosts_from_nodes
from bootsvc.dnsmasq import DnsmasqSupervisor
from bootsvc.errors import BootsvcError
from bootsvc.ra import RouterAdvertiser
from bootsvc.settings import BootSettings
from bootsvc.tftp import TftpService, TftpSettings
from cachefs.atomicfile import replace_if_changed
from launcher.config import Config
from launcher.errors import BeolaunchError
from launcher.master.bootscripts import boot_ipxe
from launcher.state.db import transaction
from launcher.state.models import Node

log = logging.getLogger(__name__)

#: Seconds between two looks at the accepted nodes.
WATCH_S = 2.0
#: The iPXE binaries PXE firmware is sent (bootsvc.dhcp's boot file names).
IPXE_BINARIES = ("undionly.kpxe", "ipxe.efi")


def dnsmasq_program() -> str:
    """dnsmasq from PATH, or from the sbin directories a non-root PATH lacks."""
    path = os.environ.get("PATH", os.defpath) + ":/usr/sbin:/sbin"
    return shutil.which("dnsmasq", path=path) or "dnsmasq"


def tftp_root(state_dir: Path) -> Path:
    return state_dir / "boot" / "tftp"


def dhcp_dir(state_dir: Path) -> Path:
    """dnsmasq's configuration, hosts file, leases and log."""
    return state_dir / "boot" / "dhcp"


def fill_tftp_root(root: Path, boot: BootSettings, http_port: int) -> list[str]:
    """Write ``boot.ipxe`` and copy the iPXE binaries into ``root``; return the missing ones."""
    root.mkdir(parents=True, exist_ok=True)
    replace_if_changed(root / "boot.ipxe", boot_ipxe(str(boot.master_address), http_port))
    missing = []
    for name in IPXE_BINARIES:
        try:
            data = (boot.ipxe_dir / name).read_bytes()
        except OSError:
            missing.append(name)
            continue
        replace_if_changed(root / name, data)
    return missing


def accepted_fingerprint(engine: Engine) -> tuple[tuple[str | None, ...], ...]:
    """(name, MAC, address, state is pending) of every node with a MAC, in id order."""
    with transaction(engine, readonly=True) as session:
        rows = session.execute(
            select(Node.name, Node.mac, Node.address, Node.state)
            .where(Node.mac.is_not(None))
            .order_by(Node.id)
        )
        return tuple(
            (name, mac, address, str(state == "pending")) for name, mac, address, state in rows
        )


class BootServices:
    """DHCP (dnsmasq), TFTP and router advertisements for one master."""

    def __init__(self, config: Config, boot: BootSettings, engine: Engine, http_port: int) -> None:
        self.config = config
        self.boot = boot
        self.engine = engine
        self.http_port = http_port
        self.root = tftp_root(config.state_dir)
        dhcp = dhcp_dir(config.state_dir)
        self.dhcp = boot.dhcp(dhcp)
        self.dnsmasq = DnsmasqSupervisor(dhcp, (dnsmasq_program(),))
        self.tftp: TftpService | None = None
        self.ra: RouterAdvertiser | None = None
        self._watch: asyncio.Task[None] | None = None
        self._seen: tuple[tuple[str | None, ...], ...] | None = None

    def _config(self) -> DnsmasqConfig:
        with transaction(self.engine, readonly=True) as session:
            nodes = list(session.scalars(select(Node).where(Node.mac.is_not(None))))
            return generate(self.dhcp, hosts_from_nodes(nodes))

    def _apply(self) -> None:
        seen = accepted_fingerprint(self.engine)
        action = self.dnsmasq.apply(self._config())
        self._seen = seen
        if action != "unchanged":
            log.info("dnsmasq %s (pid %s)", action, self.dnsmasq.pid)

    async def start(self) -> None:
        """Start TFTP, dnsmasq and RA. Raises TftpServiceError, DnsmasqError,
        DhcpConfigError or RouterAdvertError (everything started is stopped again)."""
        # tftpy logs every packet at INFO; bootsvc.tftp logs one line per transfer.
        tftpy_log = logging.getLogger("tftpy")
        if tftpy_log.level == logging.NOTSET:
            tftpy_log.setLevel(logging.WARNING)
        missing = fill_tftp_root(self.root, self.boot, self.http_port)
        if missing:
            log.warning(
                "TFTP root %s lacks %s (not in %s): PXE firmware that is not iPXE cannot "
                "boot; install the Debian package ipxe or set [boot] ipxe_dir",
                self.root,
                " and ".join(missing),
                self.boot.ipxe_dir,
            )
        dhcp_dir(self.config.state_dir).mkdir(parents=True, exist_ok=True)
        tftp = self.config.service("tftp")
        try:
            self.tftp = TftpService(TftpSettings(self.root, tftp.address, tftp.port))
            await asyncio.to_thread(self.tftp.start)
            log.info("TFTP on %s:%d serving %s", tftp.address, self.tftp.port, self.root)
            await asyncio.to_thread(self._apply)
            if self.boot.ra:
                self.ra = RouterAdvertiser(self.boot.interface)
                self.ra.start()
                log.info("router advertisements on %s (no IPv6 router)", self.boot.interface)
        except BaseException:
            await self.stop()
            raise
        self._watch = asyncio.create_task(self._watch_nodes())

    async def _watch_nodes(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            seen = self._seen
            try:
                seen = await asyncio.to_thread(accepted_fingerprint, self.engine)
                if seen != self._seen or self.dnsmasq.pid is None:
                    if self.dnsmasq.pid is None:
                        log.warning("dnsmasq is not running: starting it again")
                    await asyncio.to_thread(self._apply)
            except (BeolaunchError, BootsvcError) as exc:
                # A bad node row or a dnsmasq that will not start must not stop the master;
                # the last good configuration stays in force and the next look tries again.
                log.error("DHCP configuration not applied: %s", exc)
                self._seen = seen
            except Exception:
                # Nor may anything else (a dropped database connection): log, look again.
                log.exception("DHCP configuration check failed")

    async def stop(self) -> None:
        """Stop everything started; safe to call twice."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self.ra is not None:
            await asyncio.to_thread(self.ra.stop)
            self.ra = None
        await asyncio.to_thread(self.dnsmasq.stop)
        if self.tftp is not None:
            await asyncio.to_thread(self.tftp.stop)
            self.tftp = None
