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
    return soft
