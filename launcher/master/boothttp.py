"""The boot HTTP service (``boot_http``): per-node iPXE scripts, boot images, enrollment.

- ``GET /boot/{MAC-with-hyphens}.ipxe``: an unknown MAC becomes a pending node and
  gets a script that waits for ``beoctl node accept`` and asks again; an accepted
  node gets a script booting its kernel and stage 2 with a fresh one-time ticket.
- ``GET /boot/images/{sha256}``: a registered image's bytes (one log line each).
- ``POST /boot/enroll`` ``{"ticket": T}``: the ticket traded once for the node's
  control token (:mod:`launcher.master.boottickets`); 403 when unknown, used or expired.

Trust model: the cluster network is trusted to the extent iPXE's plain HTTP
needs: scripts and images are public to it (images hold no secrets), a ticket is
good once and for ``ticket_ttl_s`` seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from bootsvc.images import boot_problem, chosen_images, image_path
from bootsvc.settings import BootSettings
from cachefs import httpguard
from cachefs.errors import RequestBodyError
from launcher.config import Config
from launcher.errors import BootTicketError, StateError
from launcher.master.bootnodes import pending_node
from launcher.master.boottickets import Enrolled, issue_ticket, redeem_ticket
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.models import BootImage
from launcher.state.nodes import normalize_mac
from launcher.state.record import record_event

log = logging.getLogger(__name__)

#: Bytes read from an image file and written to the client at a time.
CHUNK = 1 << 20
#: Seconds a waiting node's iPXE sleeps before it asks for its script again.
RETRY_S = 5
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch: `$` let a trailing newline through
#: The largest ``POST /boot/enroll`` body (a ticket is a few dozen bytes).
ENROLL_BODY = 4096


@dataclass(frozen=True)
class BootHttpSettings:
    """What the boot service puts in scripts and enroll answers."""

    state_dir: Path
    http: tuple[str, int]
    logs_port: int
    control: tuple[str, int]
    peer_port: int
    #: the ``[boot] master_address``; None: the address each request came in on
    master_address: str | None = None
    ticket_ttl_s: int = 900
    extra_kernel_args: str = ""

    @classmethod
    def of(cls, config: Config, boot: BootSettings | None, http_port: int) -> BootHttpSettings:
        control = config.service("control")
        return cls(
            state_dir=config.state_dir,
            http=(config.service("boot_http").address, http_port),
            logs_port=config.service("logs").port,
            control=(control.address, control.port),
            peer_port=config.peers.port,
            master_address=str(boot.master_address) if boot is not None else None,
            ticket_ttl_s=boot.ticket_ttl_s if boot is not None else 900,
            extra_kernel_args=boot.extra_kernel_args if boot is not None else "",
        )


def script_url(host: str, port: int) -> str:
    """The per-node script URL iPXE expands (``${mac:hexhyp}``: 52-54-00-...)."""
    return f"http://{_bracket(host)}:{port}/boot/${{mac:hexhyp}}.ipxe"


def boot_ipxe(host: str, port: int) -> str:
    """``boot.ipxe``, served over TFTP to every iPXE client: chain to its own script."""
    return f"#!ipxe\nchain {script_url(host, port)}\n"


def waiting_script(host: str, port: int, reason: str) -> str:
    """A script that shows ``reason`` and asks for the node's script again every RETRY_S s."""
    # iPXE expands ${...} in echo: keep the reason to plain characters.
    text = re.sub(r"[^A-Za-z0-9 .,:;/_()'=+-]", "?", reason)
    return (
        "#!ipxe\n"
        f"echo Beolaunch: {text}\n"
        ":retry\n"
        f"sleep {RETRY_S}\n"
        f"chain {script_url(host, port)} || goto retry\n"
    )


def boot_script(
    s: BootHttpSettings, host: str, name: str, ticket: str, images: dict[str, BootImage]
) -> str:
    """The script booting ``name``: kernel and stage 2 over HTTP, the rest on the command line."""
    base = f"http://{_bracket(host)}:{s.http[1]}/boot/images"
    args = [
        f"{base}/{images['kernel'].sha256}",
        "initrd=stage2",
        "console=ttyS0",
        "panic=-1",
        f"beolaunch.master={host}",
        f"beolaunch.http={s.http[1]}",
        f"beolaunch.logs={s.logs_port}",
        f"beolaunch.name={name}",
        f"beolaunch.ticket={ticket}",
        f"beolaunch.stage3={images['stage3'].sha256}",
    ]
    if s.extra_kernel_args:
        args.append(s.extra_kernel_args)
    return (
        "#!ipxe\n"
        f"kernel {' '.join(args)}\n"
        f"initrd --name stage2 {base}/{images['stage2'].sha256}\n"
        "boot\n"
    )


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _unspecified(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


class BootHttp:
    """The handlers; DB work runs in threads so the master's loop never waits on it."""

    def __init__(self, engine: Engine, settings: BootHttpSettings) -> None:
        self.engine = engine
        self.settings = settings

    def _host(self, request: web.Request, service: str) -> str:
        """The master's address as a node must use it: ``[boot] master_address``, else the
        service's own address, else the one this request came in on."""
        if self.settings.master_address is not None:
            return self.settings.master_address
        if not _unspecified(service):
            return service
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport else None
        return str(sockname[0]) if sockname else "127.0.0.1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/boot/images/{sha256}", self.image)
        app.router.add_post("/boot/enroll", self.enroll)
        app.router.add_get("/boot/{file}", self.script)
        return app

    async def script(self, request: web.Request) -> web.Response:
        file = request.match_info["file"]
        if not file.endswith(".ipxe"):
            raise web.HTTPNotFound(text="expected /boot/MAC.ipxe\n")
        try:
            mac = normalize_mac(file.removesuffix(".ipxe"))
        except StateError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        host = self._host(request, self.settings.http[0])
        client = request.remote or "?"
        try:
            text = await asyncio.to_thread(self._script_for, mac, client, host)
        except IntegrityError:
            # Two first requests of one MAC at once: the other created the node.
            text = await asyncio.to_thread(self._script_for, mac, client, host)
        return web.Response(text=text, content_type="text/plain")

    def _script_for(self, mac: str, client: str, host: str) -> str:
        port = self.settings.http[1]
        with transaction(self.engine) as session:
            node = pending_node(session, mac, client)
            node.last_seen = utcnow()
            if node.state == "pending" or node.name is None:
                log.info("boot script mac=%s client=%s: pending", mac, client)
                return waiting_script(
                    host, port, f"node {mac} is waiting for: beoctl node accept {mac}"
                )
            name = node.name
            chosen = chosen_images(session, node)
            problem = boot_problem(session, chosen)
            if problem is not None:
                reason = f"cannot boot: {problem}"
                if node.state_reason != reason:  # once, not at each retry every RETRY_S s
                    node.state_reason = reason
                    record_event(session, f"node {name} {reason}", level="warning", node=node)
                    log.warning("boot script node=%s client=%s: %s", name, client, reason)
                return waiting_script(host, port, f"{reason}: see beoctl boot")
            images = {kind: image for kind, image in chosen.items() if image is not None}
            ticket = issue_ticket(session, node, ttl_s=self.settings.ticket_ttl_s)
            if node.state != "drained":
                node.state = "booting"
                node.state_reason = "fetched its boot script"
            described = ", ".join(f"{k} {images[k].name}" for k in ("kernel", "stage2", "stage3"))
            record_event(session, f"node {name} booting from {client}: {described}", node=node)
            log.info("boot script node=%s mac=%s client=%s: %s", name, mac, client, described)
            return boot_script(self.settings, host, name, ticket, images)

    def _known_image(self, sha256: str) -> bool:
        with transaction(self.engine, readonly=True) as session:
            found = session.scalars(select(BootImage.id).where(BootImage.sha256 == sha256)).first()
            return found is not None

    async def image(self, request: web.Request) -> web.StreamResponse:
        sha256 = request.match_info["sha256"]
        if not _SHA256.fullmatch(sha256) or not await asyncio.to_thread(self._known_image, sha256):
            raise web.HTTPNotFound(text=f"no boot image {sha256}\n")
        try:
            fd = os.open(image_path(self.settings.state_dir, sha256), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.error("boot image %s is registered but its file is unreadable: %s", sha256, exc)
            raise web.HTTPNotFound(text=f"boot image {sha256}: file missing\n") from None
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = size
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            client = request.remote or "?"
            sent = 0
            started = time.monotonic()
            try:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    await response.write(chunk)
                    sent += len(chunk)
                await response.write_eof()
            finally:
                log.info(
                    "boot image client=%s image=%s bytes=%d seconds=%.3f %s",
                    client,
                    sha256,
                    sent,
                    time.monotonic() - started,
                    "complete" if sent == size else "incomplete",
                )
        return response

    def _redeem(self, ticket: str) -> Enrolled | BootTicketError:
        with transaction(self.engine) as session:
            try:
                return redeem_ticket(session, ticket)
            except BootTicketError as exc:
                # Returned, not raised: an expired ticket's clearing is committed.
                return exc

    async def enroll(self, request: web.Request) -> web.Response:
        try:
            body = await httpguard.read_json(request, limit=ENROLL_BODY, what="the enroll body")
        except RequestBodyError as exc:
            return web.json_response(
                {"error": f'{exc}; expected {{"ticket": ...}}'}, status=exc.status
            )
        ticket = body.get("ticket") if isinstance(body, dict) else None
        if not isinstance(ticket, str):
            return web.json_response({"error": 'expected {"ticket": "..."}'}, status=400)
        result = await asyncio.to_thread(self._redeem, ticket)
        client = request.remote or "?"
        if isinstance(result, BootTicketError):
            log.warning("boot enroll refused client=%s: %s", client, result.problem)
            return web.json_response({"error": str(result)}, status=403)
        log.info("boot enroll node=%s client=%s", result.name, client)
        control = self.settings.control[0]
        # The control service's own address when it has one, else the master's.
        control_host = control if not _unspecified(control) else self._host(request, control)
        return web.json_response(
            {
                "name": result.name,
                "token": result.token,
                "control_url": f"ws://{_bracket(control_host)}:{self.settings.control[1]}/node",
                "peer_port": self.settings.peer_port,
            }
        )
