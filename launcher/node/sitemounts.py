"""A booted node's site filesystems (``[[boot.mounts]]``), mounted and kept trying.

Stage 3 mounts each :class:`~bootsvc.mounts.SiteMount` the master handed over
with mount(2) itself, through ctypes: there is no mount binary to lean on
(busybox's NFS mount speaks only v2/v3), and for ``nfs4`` the kernel parses
text options as long as they carry ``addr=IP`` (it resolves no names). So the
source host is resolved here (an address as it is, a name through
getaddrinfo) and ``addr=`` plus ``clientaddr=`` (this node's address toward
the server, for NFSv4.0 callbacks) are added unless the entry gives them;
``port=`` and the rest are the entry's own options.

A mount that fails is a *problem*, one line such as ``mount /home failed:
Connection refused (no NFS server answers there)``: the agent reports the
lines as the node's health, and the master keeps the node out of scheduling
with them as the reason until they are gone. :meth:`SiteMounter.start` retries
the failed ones every ``retry_s`` seconds on a daemon thread until all are
mounted, then looks every ``watch_s`` that they still are, and says each
change of the problem set to ``on_change``.

mount(2) of NFS to a server that does not answer blocks in the kernel for as
long as its RPC retries last (``timeo`` in tenths of a second, ``retrans``
tries; the defaults, ``timeo=100,retrans=3``, give about a minute per
attempt): never call :meth:`SiteMounter.mount_all` on an event loop. While an
attempt has been underway longer than ``slow_s`` it is a problem too
(``mount /home pending: ...``), so a node whose filer is silent still
registers, with that reason.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bootsvc.mounts import NFS_TYPES, SiteMount

log = logging.getLogger("launcher.node.sitemounts")

#: mount(2): source, target, filesystem type, flags, data (options). Raises OSError.
MountCall = Callable[[str, str, str, int, str], None]
OnChange = Callable[[tuple[str, ...]], None]

MOUNTINFO = Path("/proc/self/mountinfo")
#: Seconds between tries of the mounts that failed.
RETRY_S = 10.0
#: Seconds between looks, once all are mounted, at whether they still are (mountinfo).
WATCH_S = 30.0
#: Seconds an attempt may run before it counts as a problem (the kernel still tries).
SLOW_S = 15.0

#: What each failure most often means, after the kernel's own words.
_HINTS = {
    errno.ENOENT: "the export is not there: check the source path on the server",
    errno.ECONNREFUSED: "no NFS server answers there",
    errno.ETIMEDOUT: "no answer from the server",
    errno.EHOSTUNREACH: "no route to the server",
    errno.ENETUNREACH: "no route to the server",
    errno.EACCES: "the server refuses this node: check the export's clients",
    errno.EPERM: "the server refuses this node: check the export's clients",
    errno.ENODEV: "the kernel has no such filesystem type: is its module in stage 3?",
    errno.EINVAL: "the kernel refused the options",
}


def syscall_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2) through libc. Raises OSError with the kernel's errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.mount(
        source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags), data.encode()
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), target)


def resolve(host: str) -> str:
    """``host`` as an IP address: itself when it is one, else its first IPv4
    (then IPv6) address from getaddrinfo. Raises OSError (socket.gaierror)."""
    found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    found.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(found[0][4][0])


def local_address(peer: str) -> str:
    """This machine's address on the route toward ``peer`` (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((peer, 2049))
        return str(sock.getsockname()[0])


def nfs_options(options: str, addr: str, clientaddr: str) -> str:
    """``options`` with ``addr=`` and ``clientaddr=`` added unless they are given."""
    words = [w for w in options.split(",") if w]
    keys = {w.split("=", 1)[0] for w in words}
    if "addr" not in keys:
        words.append(f"addr={addr}")
    if "clientaddr" not in keys:
        words.append(f"clientaddr={clientaddr}")
    return ",".join(words)


def _unescape(field: str) -> str:
    """A mountinfo path: the kernel writes space, tab, newline, backslash as ``\\ooo``."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def mounted_sources(text: str) -> dict[str, str]:
    """Mount point -> source of a mountinfo text; the last mount on a point wins."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 2:
            continue
        found[_unescape(fields[4])] = _unescape(rest[1])
    return found


def problem(mount: SiteMount, exc: OSError) -> str:
    """The line that says why ``mount`` failed, with a hint for the usual errnos."""
    words = exc.strerror or str(exc)
    hint = _HINTS.get(exc.errno or 0)
    return f"mount {mount.target} failed: {words}" + (f" ({hint})" if hint else "")


class SiteMounter:
    """Mounts ``mounts`` and keeps trying the failed ones (see the module's doc).

    ``mount`` is the mount(2) call, ``resolve`` and ``local_address`` find the
    server's address and this node's toward it, ``mountinfo`` says what is
    mounted: all given in tests. Thread-safe: :meth:`problems` may be called
    from any thread (the agent's event loop does) while an attempt runs.
    """

    def __init__(
        self,
        mounts: Sequence[SiteMount],
        *,
        on_change: OnChange | None = None,
        retry_s: float = RETRY_S,
        watch_s: float = WATCH_S,
        slow_s: float = SLOW_S,
        mount: MountCall = syscall_mount,
        resolve: Callable[[str], str] = resolve,
        local_address: Callable[[str], str] = local_address,
        mountinfo: Path = MOUNTINFO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mounts = tuple(mounts)
        self._on_change = on_change
        self._retry_s = retry_s
        self._watch_s = watch_s
        self._slow_s = slow_s
        self._mount = mount
        self._resolve = resolve
        self._local_address = local_address
        self._mountinfo = mountinfo
        self._clock = clock
        self._lock = threading.Lock()
        self._failed: dict[str, str] = {}  # target -> problem line
        self._trying: dict[str, float] = {}  # target -> when the attempt began
        self._reported: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._first_pass = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(m.target for m in self.mounts)

    def problems(self) -> tuple[str, ...]:
        """One line per mount not (yet) there: failed, or trying for over ``slow_s``."""
        now = self._clock()
        with self._lock:
            lines = dict(self._failed)
            for target, since in self._trying.items():
                if now - since >= self._slow_s:
                    source = next(m.source for m in self.mounts if m.target == target)
                    lines[target] = (
                        f"mount {target} pending: no answer from {source} "
                        f"for {now - since:.0f} s (the kernel keeps trying)"
                    )
        return tuple(lines[m.target] for m in self.mounts if m.target in lines)

    def _mounted(self) -> dict[str, str]:
        try:
            return mounted_sources(self._mountinfo.read_text())
        except OSError as exc:
            log.warning("cannot read %s (%s): taking nothing as mounted", self._mountinfo, exc)
            return {}

    def _attempt(self, mount: SiteMount, there: dict[str, str]) -> str | None:
        """Mount ``mount`` unless it is there; its problem line, or None."""
        current = there.get(mount.target)
        if current == mount.source:
            return None
        if current is not None:
            return f"mount {mount.target} failed: {current} is mounted there; unmount it"
        try:
            os.makedirs(mount.target, mode=0o755, exist_ok=True)
        except OSError as exc:
            return f"mount {mount.target} failed: cannot make the mount point ({exc.strerror})"
        options = mount.options
        if mount.type in NFS_TYPES:
            try:
                addr = self._resolve(mount.host)
                options = nfs_options(options, addr, self._local_address(addr))
            except OSError as exc:
                return f"mount {mount.target} failed: {mount.host} unknown or unreachable ({exc})"
        try:
            self._mount(mount.source, mount.target, mount.type, 0, options)
        except OSError as exc:
            return problem(mount, exc)
        log.info("mounted %s at %s (%s, %s)", mount.source, mount.target, mount.type, options)
        return None

    def mount_all(self) -> tuple[str, ...]:
        """Try each mount not mounted yet, once, in order; the problems after."""
        there = self._mounted()
        for mount in self.mounts:
            if self._stop.is_set():
                break
            with self._lock:
                self._trying[mount.target] = self._clock()
            try:
                line = self._attempt(mount, there)
            finally:
                with self._lock:
                    self._trying.pop(mount.target, None)
            with self._lock:
                before = self._failed.get(mount.target)
                if line is None:
                    self._failed.pop(mount.target, None)
                else:
                    self._failed[mount.target] = line
            if line is not None and line != before:
                log.error("%s; retrying every %.0f s", line, self._retry_s)
        self._report()
        return self.problems()

    def _report(self) -> None:
        now = self.problems()
        with self._lock:
            changed = now != self._reported
            self._reported = now
        if changed and self._on_change is not None:
            try:
                self._on_change(now)
            except Exception:  # a broken listener must not end the retries
                log.exception("site mounts: on_change failed")

    def _gone(self) -> list[str]:
        """Targets no longer mounted from their source (unmounted since, or over-mounted)."""
        there = self._mounted()
        return [m.target for m in self.mounts if there.get(m.target) != m.source]

    def _run(self) -> None:
        self.mount_all()
        self._first_pass.set()
        whole = False
        while self.mounts:
            if not self._failed and not whole:
                log.info("site mounts: all %d mounted", len(self.mounts))
                whole = True
            if self._stop.wait(self._retry_s if self._failed else self._watch_s):
                return
            if not self._failed:  # all were mounted: still so?
                gone = self._gone()
                if not gone:
                    continue
                log.error("%s no longer mounted: mounting again", ", ".join(gone))
                whole = False
            self.mount_all()

    def start(self) -> None:
        """Mount on a daemon thread now, then retry the failed ones every ``retry_s``;
        once all are mounted, look every ``watch_s`` that they still are (an unmounted
        one is a problem again until it is mounted again).
        (``on_change`` hears of each pass's result; a pending attempt shows only in
        :meth:`problems`, which the agent asks before each hello and heartbeat.)"""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="site-mounts", daemon=True)
        self._thread.start()

    def wait_first_pass(self, timeout: float | None = None) -> bool:
        """Wait until the thread's first pass is over; False when ``timeout`` ran out
        (an attempt still blocked in the kernel: :meth:`problems` says so)."""
        return self._first_pass.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """No more retries; waits up to ``timeout`` for the thread (a mount(2) blocked
        in the kernel cannot be interrupted: the daemon thread is left to it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
