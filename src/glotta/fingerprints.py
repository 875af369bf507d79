"""Content fingerprints of input files: noticing that data/sv.txt was edited in place.

A corpus input may be a 100 GB dump, so the default ('sampled') reads at most 1 MiB of it: its
size, its modification time and a hash of 16 evenly spaced 64 KiB blocks (the first and the
last among them); files up to 1 MiB are hashed whole. An edit that keeps the size, the
modification time and every sampled block is missed; ``corpus.input_hash = "full"`` hashes every
byte instead (and then ignores the modification time, so a copied or touched file is not
"changed"). Within one process a file whose size, modification and change times did not change
is not read again: `glotta run` asks for the fingerprints several times before and while it works.
A named pipe or other stream input is recorded as a stream, never read here.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

HASH_MODES = ("sampled", "full")
_BLOCK = 1 << 16
_SAMPLES = 16
_cache: dict[tuple, dict] = {}


def file_fingerprint(path: Path, mode: str = "sampled") -> dict:
    """{'size', 'hash'} (+ 'mtime_ns' when sampled) of ``path``; {'missing': True} when gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"missing": True}
    if not stat.S_ISREG(st.st_mode):
        # A named pipe or device is a stream: reading it to hash it would consume (or wait for)
        # the very data the corpus stage reads, so its content cannot be checked.
        return {"stream": True}
    # The change time moves on every write, even one that puts the modification time back.
    key = (str(path), mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _cache:
        _cache[key] = _fingerprint(Path(path), mode, st)
    return dict(_cache[key])


def _fingerprint(path: Path, mode: str, st: os.stat_result) -> dict:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if mode == "full" or st.st_size <= _SAMPLES * _BLOCK:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        else:
            for i in range(_SAMPLES):
                fh.seek((st.st_size - _BLOCK) * i // (_SAMPLES - 1))
                digest.update(fh.read(_BLOCK))
    record = {"size": st.st_size, "hash": digest.hexdigest()}
    if mode == "sampled":
        record["mtime_ns"] = st.st_mtime_ns
    return record


def files_record(paths: list[Path], mode: str) -> dict:
    """What a corpus marker and a checkpoint record of their input files."""
    return {"hash": mode, "files": {str(p): file_fingerprint(p, mode) for p in paths}}


def changed_files(record: dict | None) -> list[str]:
    """The files of a recorded ``files_record`` whose content is no longer what was recorded."""
    if not record:
        return []
    mode = record.get("hash", "sampled")
    return [
        path
        for path, recorded in record.get("files", {}).items()
        if file_fingerprint(Path(path), mode) != recorded
    ]
