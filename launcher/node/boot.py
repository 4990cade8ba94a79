"""A network-booted node's start: enroll with the boot ticket, then run the node agent.

``python -m launcher.node.boot`` is what stage 3's ``/init`` runs
(``bootsvc/stage3_init.sh``). Stage 2 wrote ``/run/beolaunch/boot.env``
(shell ``KEY=VALUE`` lines: BEOLAUNCH_MASTER, BEOLAUNCH_HTTP, BEOLAUNCH_LOGS,
BEOLAUNCH_NAME, BEOLAUNCH_TICKET, BEOLAUNCH_IFACE, BEOLAUNCH_ADDRESS). This:

1. reads it (:func:`read_boot_env`);
2. ``POST http://MASTER:HTTP/boot/enroll {"ticket": T}`` (:func:`enroll`),
   standard library only, from a privileged source port (< 1024, bound before
   connecting: the master takes a ticket only from root on the node's address,
   as Warewulf's wwclient does for its runtime overlays; a port in use is
   skipped for another). While the master does not answer (refused, timeout,
   5xx) it retries after 1 s, doubling to 30 s; a 403 means the ticket is
   unknown, used or expired, which only a reboot (a fresh iPXE script, a fresh
   ticket) mends, so it is logged as such and tried again every
   :data:`REFUSED_RETRY_S` (an admin may reboot the node meanwhile);
3. writes the control token to ``/run/beolaunch/token`` (0600) and the rest of
   the answer to ``enrollment.json`` beside it: when the agent stops and /init
   starts this again, it reuses them instead of spending the used ticket;
4. mounts the site filesystems the answer lists (``mounts``, each checked again
   with :func:`bootsvc.mounts.parse_one`: a master's answer is input too) with
   :class:`~launcher.node.sitemounts.SiteMounter`, waiting at most
   :data:`FIRST_PASS_S` for the first try (an NFS mount to a silent server blocks
   in the kernel) and leaving the failed ones to its retry thread; each failure is
   logged, so ``beoctl node log`` shows it, and is the agent's health: the node
   registers with it as the reason it stays out of scheduling;
5. runs the node agent in this process with the cache on the tmpfs
   ``/var/cache/beolaunch/cache`` (budget: half of MemTotal), roots under
   ``/var/lib/beolaunch/roots``, the peer port the master gave, and the
   local socket ``/run/beolaunch/agent.sock``.

Every failure goes to stderr (the console) and to syslog (``/dev/log``, where
busybox ``syslogd -R`` forwards it to the master's log service). It never
exits on its own: the ticket is single use, so giving up would strand the node.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import logging
import logging.handlers
import random
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootsvc.errors import BootSettingsError
from bootsvc.mounts import SiteMount, parse_one
from cachefs.atomicfile import write_atomic
from launcher.errors import BeolaunchError, BootEnvError, EnrollError, EnrollRefusedError
from launcher.node.sitemounts import SiteMounter

log = logging.getLogger("launcher.node.boot")

BOOT_ENV = Path("/run/beolaunch/boot.env")
TOKEN_FILE = Path("/run/beolaunch/token")
#: The enroll answer without the token, so a restarted boot does not spend a used ticket.
ENROLLMENT_FILE = Path("/run/beolaunch/enrollment.json")
CACHE_DIR = Path("/var/cache/beolaunch/cache")
ROOTS_DIR = Path("/var/lib/beolaunch/roots")
STATE_FILE = Path("/var/lib/beolaunch/agent-state.json")
LOCAL_SOCKET = Path("/run/beolaunch/agent.sock")
MEMINFO = Path("/proc/meminfo")
SYSLOG_SOCKET = "/dev/log"

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
#: A refused ticket stays refused; ask again this rarely (seconds).
REFUSED_RETRY_S = 300.0
#: Seconds to wait for the master's answer to one enroll request.
ENROLL_TIMEOUT_S = 10.0

#: Source ports enroll binds (the master takes tickets only from ports below 1024):
#: the upper half of the reserved range, below which sit the well-known services,
#: tried from a random start so two enrolls in a row do not meet a TIME_WAIT.
ENROLL_PORTS = range(512, 1024)
#: Ports tried before giving up (each in use by another socket or a TIME_WAIT).
ENROLL_PORT_TRIES = 32
#: Seconds the agent waits for the first try of the site mounts; a mount still
#: blocked after this is left to its thread and reported as pending.
FIRST_PASS_S = 30.0

_REQUIRED = ("BEOLAUNCH_MASTER", "BEOLAUNCH_HTTP", "BEOLAUNCH_NAME", "BEOLAUNCH_TICKET")


@dataclass(frozen=True)
class BootEnv:
    """What stage 2 learnt: the master's address and ports, the node's name and ticket."""

    master: str
    http_port: int
    logs_port: int | None
    name: str
    ticket: str
    iface: str | None
    address: str | None

    @property
    def enroll_url(self) -> str:
        host = f"[{self.master}]" if ":" in self.master else self.master
        return f"http://{host}:{self.http_port}/boot/enroll"


@dataclass(frozen=True)
class Enrollment:
    """The master's answer to an enroll: who the node is and how it reaches the master."""

    name: str
    token: str
    control_url: str
    #: where to serve the cache to peers; None (the master said null or 0): serve none
    peer_port: int | None
    #: the site filesystems to mount (the answer's ``mounts``; none without it)
    mounts: tuple[SiteMount, ...] = ()
    #: one line per entry of ``mounts`` that failed its check: reported as health
    refused_mounts: tuple[str, ...] = ()


def parse_mounts(raw: Any) -> tuple[tuple[SiteMount, ...], tuple[str, ...]]:
    """The answer's ``mounts`` list (absent: none) checked entry by entry: the good
    ones, and a problem line for each bad one (the node keeps its used ticket and
    registers with the reason rather than enrolling again)."""
    if raw is None:
        return (), ()
    if not isinstance(raw, list):
        return (), (f"mounts refused: the master sent {type(raw).__name__}, not a list",)
    good: list[SiteMount] = []
    bad: list[str] = []
    for index, entry in enumerate(raw):
        try:
            mount = parse_one(entry, f"mounts[{index}]")
        except BootSettingsError as exc:
            bad.append(f"mount refused: {exc}; fix [[boot.mounts]] on the master and reboot")
            continue
        if any(m.target == mount.target for m in good):
            bad.append(f"mount refused: mounts[{index}] mounts {mount.target} a second time")
            continue
        good.append(mount)
    return tuple(good), tuple(bad)


def _port(path: Path, key: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise BootEnvError(path, f"{key}={value!r} is not a port number (1-65535)")
    return int(value)


def parse_boot_env(text: str, path: Path = BOOT_ENV) -> BootEnv:
    """The :class:`BootEnv` of a boot.env text (``KEY=VALUE`` lines, ``#`` comments).

    Raises :class:`BootEnvError` naming the line or key: a line that is not
    ``KEY=VALUE``, a required key missing or empty, a port that is not one.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals or not key.replace("_", "").isalnum():
            raise BootEnvError(path, f"line {number} is not KEY=VALUE: {line[:60]!r}")
        values[key] = value.strip().strip("'\"")
    missing = [key for key in _REQUIRED if not values.get(key)]
    if missing:
        raise BootEnvError(
            path,
            f"{', '.join(missing)} missing or empty; stage 2 writes them from the kernel "
            "command line (beolaunch.master= ...): check the node's iPXE script",
        )
    logs = values.get("BEOLAUNCH_LOGS")
    return BootEnv(
        master=values["BEOLAUNCH_MASTER"],
        http_port=_port(path, "BEOLAUNCH_HTTP", values["BEOLAUNCH_HTTP"]),
        logs_port=_port(path, "BEOLAUNCH_LOGS", logs) if logs else None,
        name=values["BEOLAUNCH_NAME"],
        ticket=values["BEOLAUNCH_TICKET"],
        iface=values.get("BEOLAUNCH_IFACE") or None,
        address=values.get("BEOLAUNCH_ADDRESS") or None,
    )


def read_boot_env(path: Path = BOOT_ENV) -> BootEnv:
    """Read and parse ``path``. Raises :class:`BootEnvError` (also when it cannot be read)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise BootEnvError(path, f"cannot be read ({exc.strerror}); stage 2 writes it") from exc
    except UnicodeDecodeError as exc:
        raise BootEnvError(path, "is not UTF-8 text") from exc
    return parse_boot_env(text, path)


def _answer(url: str, status: int, body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise EnrollError(url, f"HTTP {status} with a body that is not JSON", status) from exc


def enroll_ports(tries: int = ENROLL_PORT_TRIES) -> list[int]:
    """``tries`` ports of :data:`ENROLL_PORTS`, consecutive from a random one, wrapping."""
    start = random.randrange(len(ENROLL_PORTS))
    count = min(tries, len(ENROLL_PORTS))
    return [ENROLL_PORTS[(start + i) % len(ENROLL_PORTS)] for i in range(count)]


def privileged_socket(
    url: str, host: str, port: int, timeout: float, ports: Sequence[int], source: str = ""
) -> socket.socket:
    """A TCP socket to ``host``:``port`` from ``source`` (an address of this machine;
    "": the one the route picks) and the first of ``ports`` (privileged) that binds
    and connects.

    Raises :class:`EnrollError` with ``status`` None: not root (EACCES/EPERM
    binding), every port in use, or the connection failed (refused, timeout).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    busy = 0
    for local in ports:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.bind((source, local))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL or not source:
                    raise
                # Not (or no longer) this machine's: let the route choose; the master
                # refuses it if that is not the address it knows the node by.
                log.warning("%s is not an address of this node: enrolling from any", source)
                source = ""
                sock.bind((source, local))
            sock.connect((host, port))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                busy += 1  # another socket, or a TIME_WAIT of the same four-tuple
                continue
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise EnrollError(
                    url,
                    f"cannot bind source port {local} ({exc.strerror}): enroll must run as "
                    "root, since the master takes a ticket only from a privileged port",
                ) from exc
            raise EnrollError(url, f"no answer ({exc.strerror or exc})") from exc
    raise EnrollError(url, f"no free privileged source port among the {busy} tried")


class _PrivilegedConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket comes from :func:`privileged_socket`."""

    def __init__(
        self, url: str, host: str, port: int, timeout: float, ports: Sequence[int], source: str
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._url = url
        self._ports = ports
        self._timeout = timeout
        self._source = source

    def connect(self) -> None:
        self.sock = privileged_socket(
            self._url, self.host, self.port, self._timeout, self._ports, self._source
        )


def enroll(
    env: BootEnv, timeout: float = ENROLL_TIMEOUT_S, ports: Sequence[int] | None = None
) -> Enrollment:
    """One ``POST /boot/enroll`` with the ticket, from the node's address (``env.address``,
    stage 2's DHCP lease, which is the one the master gives tickets to; the route's
    choice without one) and a privileged source port (one of ``ports``, default
    :func:`enroll_ports`); the master's answer.

    Raises :class:`EnrollRefusedError` on 403, :class:`EnrollError` with
    ``status`` None when the master does not answer (connection refused,
    timeout, a 5xx) or no privileged port could be bound (not root, all in
    use), and with the status for any other bad answer.
    """
    url = env.enroll_url
    body = json.dumps({"ticket": env.ticket}).encode()
    chosen = list(ports) if ports is not None else enroll_ports()
    source = env.address or ""
    connection = _PrivilegedConnection(url, env.master, env.http_port, timeout, chosen, source)
    try:
        connection.request(
            "POST",
            "/boot/enroll",
            body=body,
            headers={"Content-Type": "application/json", "Connection": "close"},
        )
        response = connection.getresponse()
        status, raw = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollError(url, f"no answer ({exc or type(exc).__name__})") from exc
    finally:
        connection.close()
    if status == 403:
        error = _answer(url, status, raw)
        reason = error.get("error") if isinstance(error, dict) else None
        raise EnrollRefusedError(url, f"ticket refused: {reason or 'no reason given'}", status)
    if status >= 500:
        raise EnrollError(url, f"HTTP {status} (master failing; retrying)")
    if status != 200:
        raise EnrollError(url, f"HTTP {status}: {raw[:200].decode(errors='replace')}", status)
    document = _answer(url, status, raw)
    try:
        peer = document.get("peer_port")
        mounts, refused = parse_mounts(document.get("mounts"))
        enrollment = Enrollment(
            name=str(document["name"]),
            token=str(document["token"]),
            control_url=str(document["control_url"]),
            peer_port=int(peer or 0) or None,
            mounts=mounts,
            refused_mounts=refused,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise EnrollError(url, f"answer lacks name/token/control_url: {exc!r}", status) from exc
    if not enrollment.token or not enrollment.control_url.startswith(("ws://", "wss://")):
        raise EnrollError(url, "answer has an empty token or a control_url that is not ws://")
    return enrollment


def enroll_until_done(
    env: BootEnv,
    *,
    sleep: Callable[[float], None] = time.sleep,
    attempt: Callable[[BootEnv], Enrollment] = enroll,
    backoff: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S),
    refused_retry_s: float = REFUSED_RETRY_S,
) -> Enrollment:
    """Enroll, retrying forever: backoff from ``backoff[0]`` doubling to ``backoff[1]``
    while the master does not answer; ``refused_retry_s`` after a refused ticket.
    Each failure is logged (WARNING, ERROR for a refusal)."""
    delay = backoff[0]
    tries = 0
    while True:
        tries += 1
        try:
            return attempt(env)
        except EnrollRefusedError as exc:
            log.error(
                "%s: the node needs a reboot to get a fresh ticket "
                "(try %d; asking again in %.0f s)",
                exc,
                tries,
                refused_retry_s,
            )
            sleep(refused_retry_s)
        except EnrollError as exc:
            log.warning("%s (try %d; retrying in %.0f s)", exc, tries, delay)
            sleep(delay)
            delay = min(delay * 2, backoff[1])


def write_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path``, mode 0600 from creation (temp file, then rename)."""
    write_atomic(path, token + "\n", mode=0o600)


def save_enrollment(paths: NodePaths, enrollment: Enrollment) -> None:
    """Write the token (0600) and the rest of the answer next to it."""
    paths.token.parent.mkdir(parents=True, exist_ok=True)
    write_token(paths.token, enrollment.token)
    record = {
        "name": enrollment.name,
        "control_url": enrollment.control_url,
        "peer_port": enrollment.peer_port,
        "mounts": [m.to_wire() for m in enrollment.mounts],
        "refused_mounts": list(enrollment.refused_mounts),
    }
    write_atomic(paths.enrollment, json.dumps(record) + "\n")


def load_enrollment(paths: NodePaths) -> Enrollment | None:
    """The enrollment an earlier run of this boot saved, or None (then enroll)."""
    try:
        token = paths.token.read_text().strip()
        record = json.loads(paths.enrollment.read_text())
        peer = record.get("peer_port")
        mounts, refused = parse_mounts(record.get("mounts"))
        refused += tuple(str(line) for line in record.get("refused_mounts", ()))
        return Enrollment(
            name=str(record["name"]),
            token=token,
            control_url=str(record["control_url"]),
            peer_port=int(peer or 0) or None,
            mounts=mounts,
            refused_mounts=refused,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def memory_total(meminfo: Path = MEMINFO) -> int:
    """MemTotal of ``meminfo`` in bytes. Raises :class:`BootEnvError` without one."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError) as exc:
        raise BootEnvError(meminfo, f"no MemTotal ({exc})") from exc
    raise BootEnvError(meminfo, "no MemTotal line")


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its token, cache, roots, agent state and local socket."""

    token: Path = TOKEN_FILE
    enrollment: Path = ENROLLMENT_FILE
    cache: Path = CACHE_DIR
    roots: Path = ROOTS_DIR
    state: Path = STATE_FILE
    local_socket: Path = LOCAL_SOCKET


def agent_options(
    enrollment: Enrollment,
    paths: NodePaths,
    cache_budget: int,
    mounter: SiteMounter | None = None,
) -> Any:
    """The node agent's options for this enrollment (an ``AgentOptions``): with
    ``mounter``, its problems and the refused mounts as health, its targets as
    site binds."""
    from launcher.node.agent import AgentOptions  # the agent pulls in aiohttp: only now

    refused = enrollment.refused_mounts

    def health() -> tuple[str, ...]:
        return refused + (mounter.problems() if mounter is not None else ())

    return AgentOptions(
        master_url=enrollment.control_url,
        name=enrollment.name,
        token=enrollment.token,
        cache_dir=paths.cache,
        roots_dir=paths.roots,
        cache_budget=cache_budget,
        state_file=paths.state,
        peer_port=enrollment.peer_port,
        local_socket=paths.local_socket,
        health=health if mounter is not None or refused else None,
        site_binds=mounter.targets if mounter is not None else (),
    )


def start_site_mounts(
    enrollment: Enrollment,
    first_pass_s: float = FIRST_PASS_S,
    make: Callable[[tuple[SiteMount, ...]], SiteMounter] = SiteMounter,
) -> SiteMounter:
    """A :class:`SiteMounter` (made by ``make``) for the enrollment's mounts, started;
    returns once its first try is over or after ``first_pass_s``, whichever is first."""
    for line in enrollment.refused_mounts:
        log.error("%s", line)
    mounter = make(enrollment.mounts)
    if not enrollment.mounts:
        return mounter
    log.info(
        "mounting %s",
        ", ".join(f"{m.source} at {m.target}" for m in enrollment.mounts),
    )
    mounter.start()
    if not mounter.wait_first_pass(first_pass_s):
        log.warning(
            "site mounts: still trying after %.0f s; starting the agent (out of scheduling "
            "until they are mounted)",
            first_pass_s,
        )
    return mounter


def run_agent_until_stopped(options: Any) -> None:
    """Run the agent until SIGTERM or SIGINT, as ``beonode run`` does."""
    from launcher.node.agent import serve_until_signalled

    serve_until_signalled(options)


def setup_logging(syslog_socket: str = SYSLOG_SOCKET) -> None:
    """Log to stderr and, when syslogd listens on ``syslog_socket``, to syslog."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root.addHandler(console)
    try:
        handler = logging.handlers.SysLogHandler(
            address=syslog_socket, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
    except OSError:
        log.info("no syslog at %s: logging to the console only", syslog_socket)
        return
    handler.ident = "beolaunch-node: "
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Enroll and run the agent. Returns (2) only when boot.env is unusable, which
    /init reports and retries; everything else is retried here."""
    parser = argparse.ArgumentParser(prog="python -m launcher.node.boot", description=__doc__)
    parser.add_argument("--boot-env", type=Path, default=BOOT_ENV)
    parser.add_argument("--token-file", type=Path, default=TOKEN_FILE)
    parser.add_argument("--cache", type=Path, default=CACHE_DIR)
    parser.add_argument("--roots", type=Path, default=ROOTS_DIR)
    parser.add_argument("--state-file", type=Path, default=STATE_FILE)
    parser.add_argument("--local-socket", type=Path, default=LOCAL_SOCKET)
    parser.add_argument("--syslog", default=SYSLOG_SOCKET, help="syslog socket (default /dev/log)")
    args = parser.parse_args(argv)
    setup_logging(args.syslog)
    paths = NodePaths(
        token=args.token_file,
        enrollment=args.token_file.with_name(ENROLLMENT_FILE.name),
        cache=args.cache,
        roots=args.roots,
        state=args.state_file,
        local_socket=args.local_socket,
    )
    try:
        env = read_boot_env(args.boot_env)
        budget = memory_total() // 2
    except BootEnvError as exc:
        log.error("%s", exc)
        return 2
    enrollment = load_enrollment(paths)
    if enrollment is not None:
        log.info("enrolled earlier in this boot as %s (%s)", enrollment.name, paths.enrollment)
    else:
        log.info("enrolling as %s at %s", env.name, env.enroll_url)
        enrollment = enroll_until_done(env)
        if enrollment.name != env.name:
            log.warning("the master calls this node %s, not %s", enrollment.name, env.name)
        try:
            save_enrollment(paths, enrollment)
        except OSError as exc:
            log.error("cannot write %s: %s", paths.token, exc)
            return 1
    try:
        paths.cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.error("cannot make the cache %s: %s", paths.cache, exc)
        return 1
    log.info(
        "enrolled as %s; agent to %s, cache budget %d bytes, peer port %s",
        enrollment.name,
        enrollment.control_url,
        budget,
        enrollment.peer_port,
    )
    mounter = start_site_mounts(enrollment)
    try:
        run_agent_until_stopped(agent_options(enrollment, paths, budget, mounter))
    except BeolaunchError as exc:
        log.error("node agent: %s", exc)
        return 1
    finally:
        mounter.stop(timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
