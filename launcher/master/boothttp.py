"""The boot HTTP service (``boot_http``): per-node iPXE scripts, boot images, enrollment.

- ``GET /boot/{MAC-with-hyphens}.ipxe``: an unknown MAC becomes a pending node
  (bounded by ``[boot] max_pending`` and rate-limited per source address and
  overall: 503/429 beyond) and gets a script that waits for ``beoctl node
  accept`` and asks again; an accepted node that is not connected, asking from
  its own address, gets a script booting its kernel and stage 2 with a fresh
  one-time ticket (replacing any older one); any other asker gets a waiting
  script that says why and no ticket.
- ``GET /boot/images/{sha256}``: a registered image's bytes (one log line each).
- ``POST /boot/enroll`` ``{"ticket": T}``: the ticket traded once for the node's
  control token, only from a privileged source port and the node's address
  (:mod:`launcher.master.boottickets`); 403 otherwise, or when unknown, used or
  expired.

Trust model: the service listens only with a ``[boot]`` table, on ``[boot]
master_address`` (the cluster interface). Everyone on the cluster network,
every job included, can read scripts and images (iPXE speaks plain HTTP;
images hold no secret). A ticket is given only where only the booting node
can use it, and the token only to root on the node's address; see
:mod:`launcher.master.boottickets`. Refusals are logged (and recorded as the
node's events) once per :data:`launcher.master.notices.INTERVAL_S`, not per retry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bootsvc.images import image_path
from cachefs import httpguard
from cachefs.errors import RequestBodyError
from launcher.errors import BootTicketError, StateError, TooManyPendingError
from launcher.master.bootlimits import PendingGate
from launcher.master.bootnodes import node_by_mac, pending_node
from launcher.master.bootscripts import (
    RETRY_S,
    BootHttpSettings,
    boot_ipxe,
    boot_script,
    bracket,
    script_url,
    waiting_script,
)
from launcher.master.boottickets import (
    Enrolled,
    issue_ticket,
    redeem_ticket,
    ticket_refusal,
)
from launcher.master.notices import Notices, since
from launcher.state.base import utcnow
from launcher.state.bootimages import boot_problem, chosen_images
from launcher.state.db import transaction
from launcher.state.models import BootImage, Node
from launcher.state.nodes import normalize_mac
from launcher.state.record import record_event

log = logging.getLogger(__name__)

# The settings and script text moved to bootscripts; kept importable from here.
__all__ = [
    "RETRY_S",
    "BootHttp",
    "BootHttpSettings",
    "boot_ipxe",
    "boot_script",
    "script_url",
    "waiting_script",
]

#: Bytes read from an image file and written to the client at a time.
CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch: `$` let a trailing newline through
#: The largest ``POST /boot/enroll`` body (a ticket is a few dozen bytes).
ENROLL_BODY = 4096


@dataclass(frozen=True)
class Answer:
    """A script request's answer: status, text, headers."""

    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    #: the node a boot ticket was issued to in this script
    booting: str | None = None


def _unspecified(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


def _peer(request: web.Request) -> tuple[str, int]:
    """The request's source address and port (("?", 0) when unknown)."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0]), int(peername[1])
    return request.remote or "?", 0


class BootHttp:
    """The handlers; DB work runs in threads so the master's loop never waits on it.

    ``connected(name)`` says whether node ``name`` has a live control session
    (the master's ``NodeRegistry.links``); it is called from those threads, and a
    dict membership test is safe there.
    """

    def __init__(
        self,
        engine: Engine,
        settings: BootHttpSettings,
        *,
        connected: Callable[[str], bool] = lambda _name: False,
        notices: Notices | None = None,
        gate: PendingGate | None = None,
        on_boot: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        #: told, on the loop, each node given a boot ticket (metrics.Metrics.boot_started)
        self.on_boot = on_boot
        self.settings = settings
        self.connected = connected
        self.notices = notices or Notices()
        self.gate = gate or PendingGate(
            overall=settings.new_nodes_per_minute,
            per_address=settings.new_nodes_per_address_per_minute,
        )

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
        client = _peer(request)[0]
        try:
            answer = await asyncio.to_thread(self._script_for, mac, client, host)
        except IntegrityError:
            # Two first requests of one MAC at once: the other created the node.
            answer = await asyncio.to_thread(self._script_for, mac, client, host)
        if answer.booting is not None and self.on_boot is not None:
            self.on_boot(answer.booting)
        return web.Response(
            status=answer.status,
            text=answer.text,
            content_type="text/plain",
            headers=answer.headers,
        )

    def _say(
        self,
        key: tuple[str, ...],
        message: str,
        *,
        session: Session | None = None,
        node: Node | None = None,
        level: str = "warning",
    ) -> None:
        """Log ``message`` (and record it as ``node``'s event) once per notice interval."""
        quiet = self.notices.due(key)
        if quiet is None:
            return
        log.log(logging.INFO if level == "info" else logging.WARNING, "%s%s", message, since(quiet))
        if session is not None and node is not None:
            record_event(session, message, level=level, node=node)

    def _new_pending(self, session: Session, mac: str, client: str) -> Node | Answer:
        """A new pending node for ``mac``, or the refusal when a limit is reached."""
        refused = self.gate.admit(client)
        if refused is not None:
            self._say(
                ("rate", str(refused.status), client if refused.status == 429 else ""),
                f"boot script mac={mac} client={client}: refused: {refused.reason}",
            )
            return Answer(
                refused.status,
                f"{refused.reason}; ask again in {refused.retry_after_s} s\n",
                {"Retry-After": str(refused.retry_after_s)},
            )
        try:
            return pending_node(session, mac, client, max_pending=self.settings.max_pending)
        except TooManyPendingError as exc:
            self._say(("max_pending",), f"boot script mac={mac} client={client}: refused: {exc}")
            return Answer(503, f"{exc}\n", {"Retry-After": str(60)})

    def _script_for(self, mac: str, client: str, host: str) -> Answer:
        port = self.settings.http[1]
        with transaction(self.engine) as session:
            found = node_by_mac(session, mac)
            if found is None:
                made = self._new_pending(session, mac, client)
                if isinstance(made, Answer):
                    return made
                found = made
            node = found
            if node.state == "pending":
                pending_node(session, mac, client)  # records the address it asks from now
            node.last_seen = utcnow()
            if node.state == "pending" or node.name is None:
                log.info("boot script mac=%s client=%s: pending", mac, client)
                return Answer(
                    200,
                    waiting_script(
                        host, port, f"node {mac} is waiting for: beoctl node accept {mac}"
                    ),
                )
            name = node.name
            connected = self.connected(name)
            refusal = ticket_refusal(node, client, connected=connected)
            if refusal is not None:
                self._say(
                    ("script", name, client, str(connected)),
                    f"node {name}: no boot ticket for {client}: {refusal}",
                    session=session,
                    node=node,
                )
                renew = not connected and node.address is not None
                return Answer(200, waiting_script(host, port, refusal, renew=renew))
            chosen = chosen_images(session, node)
            problem = boot_problem(session, chosen)
            if problem is not None:
                reason = f"cannot boot: {problem}"
                if node.state_reason != reason:  # once, not at each retry every RETRY_S s
                    node.state_reason = reason
                    record_event(session, f"node {name} {reason}", level="warning", node=node)
                    log.warning("boot script node=%s client=%s: %s", name, client, reason)
                return Answer(200, waiting_script(host, port, f"{reason}: see beoctl boot"))
            images = {kind: image for kind, image in chosen.items() if image is not None}
            ticket = issue_ticket(session, node, ttl_s=self.settings.ticket_ttl_s)
            if node.state != "drained":
                node.state = "booting"
                node.state_reason = "fetched its boot script"
            described = ", ".join(f"{k} {images[k].name}" for k in ("kernel", "stage2", "stage3"))
            record_event(session, f"node {name} booting from {client}: {described}", node=node)
            log.info("boot script node=%s mac=%s client=%s: %s", name, mac, client, described)
            return Answer(200, boot_script(self.settings, host, name, ticket, images), booting=name)

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

    def _redeem(self, ticket: str, client: str, port: int) -> Enrolled | BootTicketError:
        with transaction(self.engine) as session:
            try:
                return redeem_ticket(
                    session, ticket, client=client, port=port, connected=self.connected
                )
            except BootTicketError as exc:
                # Returned, not raised: a clearing (expired, connected) is committed.
                node = (
                    session.scalars(select(Node).where(Node.name == exc.node)).first()
                    if exc.node is not None
                    else None
                )
                self._say(
                    ("enroll", client, exc.problem),
                    f"boot enroll refused client={client}:{port}: {exc.problem}",
                    session=session,
                    node=node,
                )
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
        client, port = _peer(request)
        result = await asyncio.to_thread(self._redeem, ticket, client, port)
        if isinstance(result, BootTicketError):
            return web.json_response({"error": str(result)}, status=403)
        log.info("boot enroll node=%s client=%s:%d", result.name, client, port)
        control = self.settings.control[0]
        # The control service's own address when it has one, else the master's.
        control_host = control if not _unspecified(control) else self._host(request, control)
        return web.json_response(
            {
                "name": result.name,
                "token": result.token,
                "control_url": f"ws://{bracket(control_host)}:{self.settings.control[1]}/node",
                "peer_port": self.settings.peer_port,
                "mounts": [m.to_wire() for m in self.settings.mounts],
            }
        )
