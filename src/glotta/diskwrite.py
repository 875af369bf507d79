"""A write of run state that fails for want of room ends as one line naming the file.

A full disk, a quota or a file-size limit (``ulimit -f``) reaches glotta in three shapes: an
``OSError`` from Python's own writes; a ``SafetensorError`` whose message ends in
``(os error 28)``; and from ``torch.save`` a ``RuntimeError`` ("unexpected pos ...", or
"basic_ios::clear: iostream error" when torch opens the file itself) that does not say why.
:func:`torch_save` therefore hands torch a file opened by Python, so the ``OSError`` of the
failed write is what the ``RuntimeError`` happened during, and :func:`writing` turns all three
into a :class:`~glotta.errors.GlottaError` naming the path and the system's reason.

Writers stay atomic (a ``.partial`` name renamed when complete, checkpoint manifests), so what a
failed write leaves behind never looks finished; the message says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glotta.errors import GlottaError

# errno -> what to do about it
ADVICE = {
    errno.ENOSPC: "free space on that file system, or write the run elsewhere with --run-dir",
    errno.EDQUOT: "free space within your quota or ask for a larger one, or use another --run-dir",
    errno.EFBIG: "the file is larger than this process may write: raise the file-size limit "
    "(ulimit -f) or use a file system that allows larger files",
    errno.EROFS: "the file system is read-only: use another --run-dir",
}
_OS_ERROR_IN_MESSAGE = re.compile(r"os error (\d+)\)")


def disk_error(exc: BaseException) -> OSError | None:
    """The OSError of a failed write behind ``exc`` (itself, what it happened during, or the
    errno in a safetensors message), when it is one :data:`ADVICE` covers."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in ADVICE:
            return seen
        match = _OS_ERROR_IN_MESSAGE.search(str(seen))
        if match and int(match.group(1)) in ADVICE:
            code = int(match.group(1))
            return OSError(code, os.strerror(code))
        seen = seen.__cause__ or seen.__context__
    return None


def write_failure(path: Path | str | None, error: OSError) -> GlottaError:
    where = error.filename or path or "a file of the run"
    return GlottaError(
        f"cannot write {where}: {error.strerror or error} ({ADVICE[error.errno]}); nothing "
        "incomplete is used: run the command again once there is room"
    )


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Translate a failed write inside the block into one line naming ``path``."""
    try:
        yield
    except GlottaError:
        raise
    except Exception as exc:
        error = disk_error(exc)
        if error is None:
            raise
        raise write_failure(path, error) from exc


def torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a file Python opened, so a failed write says why."""
    import torch

    with writing(path), open(path, "wb") as fh:
        torch.save(obj, fh)
