"""Supervise the one dnsmasq process the master starts for its DHCP.

dnsmasq re-reads its ``--dhcp-hostsfile`` (our static leases) on SIGHUP but not its
main configuration, so a change of leases only is a SIGHUP and any other change a
restart. Only the process this object started is ever signalled, by its pid.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

from bootsvc.dhcp import DnsmasqConfig, conf_path, hosts_path
from bootsvc.errors import DnsmasqError
from cachefs.atomicfile import replace_if_changed

Action = Literal["started", "reloaded", "restarted", "unchanged"]

# Seconds to wait for dnsmasq to report itself started before assuming it runs.
START_WAIT = 5.0


class DnsmasqSupervisor:
    """Writes the configuration under ``state_dir`` and keeps one dnsmasq running on it.

    ``command`` is the program and any prefix (``("ip", "netns", "exec", NS, "dnsmasq")``
    in tests); dnsmasq runs in the foreground (``--no-daemon``) with its output
    appended to ``state_dir/dnsmasq.log``.
    """

    def __init__(self, state_dir: Path, command: Sequence[str] = ("dnsmasq",)) -> None:
        self.state_dir = state_dir
        self.command = tuple(command)
        self.conf = conf_path(state_dir)
        self.hosts = hosts_path(state_dir)
        self.log = state_dir / "dnsmasq.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running dnsmasq this supervisor started, if any."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def apply(self, config: DnsmasqConfig) -> Action:
        """Write ``config``; start dnsmasq, SIGHUP it (leases changed) or restart it.

        Raises DnsmasqError when dnsmasq is missing or exits at once (bad config,
        interface absent, port 67 taken: its log says which).
        """
        hosts_changed = replace_if_changed(self.hosts, config.hosts)
        conf_changed = replace_if_changed(self.conf, config.conf)
        if self.pid is None:
            self._start()
            return "started"
        if conf_changed:
            self.stop()
            self._start()
            return "restarted"
        if hosts_changed:
            assert self._process is not None
            self._process.send_signal(signal.SIGHUP)
            return "reloaded"
        return "unchanged"

    def _start(self) -> None:
        argv = [*self.command, "--no-daemon", f"--conf-file={self.conf}"]
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's life
        offset = self._log_file.tell()
        try:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file
            )
        except OSError as exc:
            self._close_log()
            raise DnsmasqError(
                " ".join(self.command), f"cannot run: {exc.strerror}; install dnsmasq"
            ) from exc
        # dnsmasq logs "started" once its sockets are bound, and exits at once on a bad
        # configuration, a missing interface or a busy port 67. Wait for either.
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                self._process = None
                self._close_log()
                raise DnsmasqError(
                    " ".join(self.command), f"exited with status {code} at start: see {self.log}"
                )
            with open(self.log, "rb") as log:
                log.seek(offset)
                if b"dnsmasq: started" in log.read():
                    return
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the dnsmasq this supervisor started (SIGTERM, then SIGKILL after ``timeout`` s)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
