"""Token shards: one binary file per split, a fixed header then little-endian token ids.

Layout (in the style of llm.c's token files), all integers little-endian::

    offset  size  field
         0     8  magic        b"GLTTOKS\\0"
         8     4  version      uint32, currently 1
        12     4  token_bytes  uint32, 2 (uint16 ids) when vocab_size <= 65536, else 4 (uint32)
        16     8  tokens       uint64, ids in the file (one eos per document included)
        24     8  documents    uint64
        32     8  vocab_size   uint64
        40     8  eos_id       int64, -1 when the writer was given none
        48    16  zero padding to HEADER_BYTES = 64
        64     -  tokens * token_bytes bytes of ids

Every document is followed by the eos id, so documents are separated (and the model learns to
end them). A writer writes ``NAME.partial``, patches the counts into the header on close, fsyncs
and renames: a shard under its final name is always complete.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from glotta.diskwrite import writing
from glotta.errors import GlottaError

MAGIC = b"GLTTOKS\0"
VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sIIQQQq")  # magic version token_bytes tokens documents vocab eos


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab_size <= 65536), else uint32; little-endian."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size > 2**32:
        raise ValueError(f"vocab_size {vocab_size} does not fit 32-bit token ids")
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def _pack_header(token_bytes: int, tokens: int, documents: int, vocab_size: int, eos: int) -> bytes:
    header = _HEADER.pack(MAGIC, VERSION, token_bytes, tokens, documents, vocab_size, eos)
    return header.ljust(HEADER_BYTES, b"\0")


class ShardWriter:
    """Write documents of token ids to a shard; use as a context manager (aborts on exception).

    ``write_document(ids)`` / ``write_documents(batch)`` append each document followed by
    ``eos_id`` (when given; without it the caller separates documents itself).
    """

    def __init__(self, path: Path | str, vocab_size: int, eos_id: int | None = None):
        self.path = Path(path)
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size)
        if eos_id is not None and not 0 <= eos_id < vocab_size:
            raise ValueError(f"eos_id {eos_id} is outside the vocabulary of {vocab_size}")
        self.eos_id = eos_id
        self.tokens = 0
        self.documents = 0
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._file = open(self._partial, "wb")
        self._file.write(self._header())  # counts are patched in on close()

    def _header(self) -> bytes:
        eos = -1 if self.eos_id is None else self.eos_id
        return _pack_header(self.dtype.itemsize, self.tokens, self.documents, self.vocab_size, eos)

    def write_document(self, ids: Sequence[int] | np.ndarray) -> None:
        self.write_documents([ids])

    def write_documents(self, batch: Sequence[Sequence[int] | np.ndarray]) -> None:
        """Append documents (each a sequence of ids), each followed by eos."""
        if batch:
            self.write_ids(documents_to_ids(batch, self.vocab_size, self.eos_id), len(batch))

    def write_ids(self, ids: np.ndarray, documents: int) -> None:
        """Append ids already laid out by :func:`documents_to_ids` for this vocabulary."""
        if ids.dtype != self.dtype:
            raise ValueError(f"ids of dtype {ids.dtype} for a {self.dtype} shard")
        with writing(self._partial):
            self._file.write(ids.tobytes())
        self.tokens += ids.size
        self.documents += documents

    def close(self) -> None:
        """Patch the counts into the header, fsync and rename to the final name."""
        if self._file.closed:
            return
        with writing(self._partial):
            self._file.seek(0)
            self._file.write(self._header())
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        """Drop the partial file; the final name is left untouched."""
        if not self._file.closed:
            self._file.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def documents_to_ids(
    batch: Sequence[Sequence[int] | np.ndarray], vocab_size: int, eos_id: int | None
) -> np.ndarray:
    """The ids of ``batch`` as they go into a shard: each document then ``eos_id`` (when given),
    in the shard dtype of ``vocab_size``; ``ValueError`` on an id outside the vocabulary."""
    if any(isinstance(ids, np.ndarray) for ids in batch):
        batch = [ids.tolist() if isinstance(ids, np.ndarray) else ids for ids in batch]
    # One flat Python list, then one conversion: list.extend and np.array run in C, ~2x
    # faster than numpy iterating a chain of lists (packing spends its Python time here).
    flat: list[int] = []
    for ids in batch:
        flat += ids
        if eos_id is not None:
            flat.append(eos_id)
    values = np.array(flat, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() >= vocab_size):
        bad = values[(values < 0) | (values >= vocab_size)][0]
        raise ValueError(f"token id {bad} is outside the vocabulary of {vocab_size}")
    return values.astype(token_dtype(vocab_size))


def shard_header(path: Path | str) -> dict[str, Any]:
    """The validated header of a shard; ``GlottaError`` naming the file if it is not one."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise GlottaError(f"token shard {path} does not exist; run `glotta pack` first") from None
    except OSError as exc:
        raise GlottaError(f"token shard {path} cannot be read: {exc}") from None
    if len(raw) < HEADER_BYTES or raw[:8] != MAGIC:
        raise GlottaError(
            f"{path} is not a glotta token shard (no {MAGIC!r} header); re-run `glotta pack`"
        )
    _, version, token_bytes, tokens, documents, vocab_size, eos_id = _HEADER.unpack_from(raw)
    if version != VERSION:
        raise GlottaError(
            f"{path} is a version {version} token shard; this glotta reads version {VERSION}. "
            "Re-run `glotta pack`"
        )
    if token_bytes not in (2, 4):
        raise GlottaError(f"{path}: corrupt header (token width {token_bytes} bytes)")
    expected = HEADER_BYTES + tokens * token_bytes
    if size != expected:
        raise GlottaError(
            f"{path} is truncated or corrupt: the header promises {tokens:,} tokens "
            f"({expected:,} bytes) but the file has {size:,} bytes; re-run `glotta pack`"
        )
    return {
        "version": version,
        "token_bytes": token_bytes,
        "dtype": "uint16" if token_bytes == 2 else "uint32",
        "tokens": tokens,
        "documents": documents,
        "vocab_size": vocab_size,
        "eos_id": None if eos_id < 0 else eos_id,
        "header_bytes": HEADER_BYTES,
    }


def open_shard(path: Path | str) -> np.ndarray:
    """The shard's token ids as a read-only ``numpy.memmap`` (uint16 or uint32), header checked.

    An empty shard gives an empty array (a file cannot be memory-mapped past its end).
    """
    header = shard_header(path)
    dtype = np.dtype("<u2") if header["token_bytes"] == 2 else np.dtype("<u4")
    if header["tokens"] == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(header["tokens"],))
