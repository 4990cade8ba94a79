"""Process limits the long-running daemons (master, node agent) set at start.

Each connection costs a descriptor. Debian's default soft RLIMIT_NOFILE is
1024 (the hard limit 524288 under systemd, 1048576 here): at 1024 a burst of
clients, or the probe of issue 12, exhausted the master's descriptors long
before any connection cap (cachefs.httpguard.MAX_CONNECTIONS per listening
socket) was reached, and every ``accept()`` failed with EMFILE. The unit file
(``beolaunch-master.service``) sets ``LimitNOFILE=`` so the hard limit is known.
"""

from __future__ import annotations

import logging
import resource

from cachefs.httpguard import MAX_CONNECTIONS

log = logging.getLogger(__name__)

#: The soft limit asked for when the hard limit is unlimited (the kernel's
#: default fs.nr_open, above which setrlimit fails).
UNLIMITED_TARGET = 1 << 20


def raise_open_files() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the soft limit now in force.

    Never raises: a limit that cannot be raised is logged and left as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning(
                "open file limit stays at %d (cannot raise it to %d: %s)", soft, target, exc
            )
            return soft
        log.info("open file limit raised from %d to %d", soft, target)
        return target
    log.info("open file limit is %d", soft)
    return soft


#: Descriptors the master keeps for everything but node control connections:
#: the user socket, the object service (a socket and an open store file per
#: connection) and the boot HTTP service at their connection caps
#: (cachefs.httpguard.MAX_CONNECTIONS each), and 256 for the rest (the
#: database, its pool, listening and UDP sockets, logs, the DHCP/TFTP sockets).
RESERVED_FILES = 4 * MAX_CONNECTIONS + 256


def fit_connections(wanted: int, open_files: int, reserved: int = RESERVED_FILES) -> int:
    """How many connections a site that wants ``wanted`` may hold when the process
    has ``open_files`` descriptors and keeps ``reserved`` of them for its other
    work: ``wanted`` when they fit, else what is left after ``reserved`` but never
    less than half of ``open_files`` (a small limit is shared, not given away).
    Logs one line when the cap is lowered. ``open_files`` RLIM_INFINITY: no limit."""
    if open_files == resource.RLIM_INFINITY or open_files >= wanted + reserved:
        return wanted
    cap = max(open_files - reserved, open_files // 2, 1)
    log.warning(
        "node connections capped at %d, not %d: the open file limit is %d and %d are kept"
        " for the other services; raise the hard limit (LimitNOFILE= in the unit file,"
        " ulimit -Hn) to at least %d for the full cap",
        cap,
        wanted,
        open_files,
        reserved,
        wanted + reserved,
    )
    return cap
