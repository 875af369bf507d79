"""One writer per run folder: every command that writes into RUN_DIR holds RUN_DIR/.lock.

Two `glotta train` (or a `glotta run` and a `glotta corpus`) in one folder would interleave
checkpoints, markers and shards into a run that no single command produced. The lock is an OS
file lock (``flock``), so it is released when its process ends however it ends (SIGKILL, out of
memory); the file keeps a line naming its last holder (pid, host, command, since when), which a
refused command prints. The file is not deleted (that would let a third process lock a new
file while the second still holds the old one), except with the folder that a refused command
created and left empty.

Commands take it once, where they learn their run folder (:func:`glotta.cli_options.resolve_run`);
holding it again in the same process is a no-op, so `glotta run` calling the stages in-process
needs nothing more. Under torchrun only global rank 0 takes it: the other ranks write nothing
the lock guards, and waiting on rank 0's lock would deadlock them.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from glotta.errors import GlottaError

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # resolved run folder -> the open, locked file descriptor
_created: set[Path] = set()  # run folders that locking created (to remove if left empty)


def hold_run_dir(root: Path, command: str) -> None:
    """Lock ``root`` for this process until :func:`release_run_dirs` or the process ends."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    root = Path(root)
    existed = root.is_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    if key in _held:
        return
    if not existed:
        _created.add(key)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 1000, 0).decode("utf-8", errors="replace").strip()
        os.close(fd)
        raise GlottaError(
            f"{root} is in use by another glotta process ({holder or 'holder unknown'}); wait for "
            "it to finish or stop it, or use another --run-dir"
        ) from None
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    line = f"pid {os.getpid()} on {socket.gethostname()}, glotta {command}, since {since}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, line.encode(), 0)
    _held[key] = fd


def release_run_dirs() -> None:
    """Unlock every run folder this process holds (the command is over). A folder that locking
    created and that holds nothing but the lock (a recipe refused before any stage ran) is
    removed: a mistake leaves no run folder behind."""
    while _held:
        key, fd = _held.popitem()
        if key in _created and [p.name for p in key.iterdir()] == [LOCK_FILE]:
            (key / LOCK_FILE).unlink()
            key.rmdir()
        os.close(fd)  # closing the last descriptor releases the flock
    _created.clear()
