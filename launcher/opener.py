"""``python -m launcher.opener``: open files as the submitting user, hand the fds back.

The master runs as root and must store only files the submitting user could
read. Checking permission bits and then opening as root races with a user
swapping a path for a symlink; instead the master starts this helper with the
user's uid, gid and groups (subprocess ``user=``/``group=``/``extra_groups=``)
and a SOCK_SEQPACKET socket whose fd number is its one argument. For each path
on stdin (one per line, NUL-free) it opens the file O_RDONLY|O_NOFOLLOW|O_NONBLOCK
and sends back one record: the fd (SCM_RIGHTS) with ``ok``, or ``err <errno name>``.
The kernel checks access exactly as it would for the user's own process.
Records, not a byte stream: on a stream socket two ``err`` lines sent before
the master read arrived as one, so a path got the next path's error and
every later path the fd of the one after it.

ELOOP has two causes that O_NOFOLLOW cannot tell apart: the path itself is a
symbolic link (refused on purpose; answered ``err SYMLINK``), or a loop of
links on the way to it (``err ELOOP``). ``lstat`` as the user tells which.

With ``append`` as its second argument it opens for a batch job's output instead:
O_WRONLY|O_CREAT|O_APPEND|O_NOFOLLOW|O_NONBLOCK, mode 0644, so a new file is the
user's and a symlink planted at the path is refused (ELOOP), never followed. O_NONBLOCK
keeps a FIFO with no reader from hanging the helper (ENXIO); the master refuses
anything but regular files and character devices (``/dev/null``) anyway.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys


def _code(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return "SYMLINK"
        except OSError:
            pass
    return errno.errorcode.get(exc.errno or 0, "EIO")


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]))
    flags = os.O_RDONLY
    if sys.argv[2:] == ["append"]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        os.umask(0o022)
    for line in sys.stdin:
        path = line.rstrip("\n")
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            sock.sendall(f"err {_code(path, exc)}\n".encode())
            continue
        socket.send_fds(sock, [b"ok\n"], [fd])
        os.close(fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
