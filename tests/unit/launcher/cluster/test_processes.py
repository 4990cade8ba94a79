"""Pid files and command-line matching: what keeps a recycled pid from being signalled."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from launcher.cluster import processes


def test_cmdline_matches_exact_script_and_wrapper() -> None:
    argv = ["beonode", "run", "--name", "node1"]
    assert processes.cmdline_matches(argv, argv)
    # A #! script shows as interpreter, script path, args.
    assert processes.cmdline_matches(["/venv/bin/python", "/venv/bin/beonode", *argv[1:]], argv)
    # Our nsenter wrapper before it execs.
    wrapper = ["nsenter", "--net=/run/netns/x", "--uts=/s/uts", "--", *argv]
    assert processes.cmdline_matches(wrapper, argv)


def test_cmdline_mismatch_is_not_ours() -> None:
    argv = ["sleep", "300"]
    assert not processes.cmdline_matches(["sleep", "301"], argv)
    assert not processes.cmdline_matches(["/bin/other", "300"], argv)
    assert not processes.cmdline_matches(["300"], argv)
    assert not processes.cmdline_matches(["sleep", "300"], [])


def test_pid_file_plain_or_with_argv(tmp_path: Path) -> None:
    plain = tmp_path / "a.pid"
    plain.write_text("1234\n")
    rec = processes.read_pid_file(plain)
    assert rec is not None and rec.pid == 1234 and rec.argv is None
    full = tmp_path / "b.pid"
    full.write_text(f"99\n{json.dumps(['sleep', '1'])}\n")
    rec = processes.read_pid_file(full)
    assert rec is not None and (rec.pid, rec.argv) == (99, ["sleep", "1"])
    for bad in ("", "x\n", "-3\n"):
        plain.write_text(bad)
        assert processes.read_pid_file(plain) is None
    assert processes.read_pid_file(tmp_path / "missing.pid") is None


def test_start_running_terminate(tmp_path: Path) -> None:
    pid_file, log = tmp_path / "p.pid", tmp_path / "p.log"
    argv = ["sh", "-c", "echo started; exec sleep 300"]
    pid = processes.start(argv, pid_file, log, record=["sleep", "300"])
    try:
        proc = None
        for _ in range(500):  # until sh has exec'd sleep (at most 5 s)
            proc = processes.running(pid_file)
            if proc is not None:
                break
            time.sleep(0.01)
        assert proc is not None and proc.pid == pid
        # The same pid with another recorded command is not ours.
        pid_file.write_text(f"{pid}\n{json.dumps(['other'])}\n")
        assert processes.running(pid_file) is None
        stopped, killed = processes.terminate([proc])
        assert (stopped, killed) == (1, 0)
        assert not proc.is_running() or proc.status() == "zombie"
        assert "started" in log.read_text()
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
