"""``glotta serve`` on a non-loopback address without an API key warns on stderr (the real CLI in
a subprocess; the tests only send requests to 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from tests.serve.conftest import free_port, running_server

WARNING = "without an API key: anyone who can reach this machine can use the server"


def first_stderr_lines(args: list[str], until: str, timeout: float = 120) -> list[str]:
    """Start ``python -m glotta serve ARGS``, collect its stderr lines until one contains
    ``until`` (or it exits, or ``timeout`` passes), then stop it."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen([sys.executable, "-m", "glotta", "serve", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:  # a thread, so a server that never prints cannot block the test
        for line in proc.stderr:
            lines.append(line)
            if until in line:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not found.is_set() and proc.poll() is None and time.monotonic() < deadline:
            found.wait(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    return lines


def test_all_interfaces_without_a_key_warns_with_how_to_set_one(tiny_run):
    _, run_dir = tiny_run
    port = free_port()
    lines = first_stderr_lines([str(run_dir.export), "--host", "0.0.0.0", "--port", str(port)],
                               until="Uvicorn running")  # fmt: skip
    warnings = [line for line in lines if WARNING in line]
    assert len(warnings) == 1, "".join(lines)
    (warning,) = warnings
    assert warning.startswith("glotta: warning: serving on 0.0.0.0:") and "--api-key" in warning
    assert warning.endswith(")\n") and "Uvicorn running" in "".join(lines)  # one line, then up


def test_no_warning_with_a_key_or_on_loopback(tiny_run, tmp_path):
    _, run_dir = tiny_run
    for flags in (["--host", "0.0.0.0", "--api-key", "k"], []):
        with running_server(run_dir.export, tmp_path, *flags) as server:
            assert WARNING not in server.log_tail(100_000)
