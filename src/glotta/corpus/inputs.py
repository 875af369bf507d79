"""Find and open corpus inputs: files, directories, globs, pkg:// paths; .gz/.bz2/.zst streams.

Resolution is eager (a missing file or an unknown extension fails before any work); opening is
streaming (decompression on the fly, a bounded buffer, truncation reported as an error).
"""

from __future__ import annotations

import bz2
import glob
import gzip
import importlib.util
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from glotta.config import CorpusConfig
from glotta.errors import GlottaError

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd")
FORMAT_BY_SUFFIX = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".json": "jsonl",  # read as JSON Lines; a JSON array is detected and reported
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".tsv": "tsv",
    ".xml": "wikipedia",  # MediaWiki XML export (*-pages-articles*.xml.bz2)
}


@dataclass(frozen=True)
class Source:
    """A resolved input: a local file with its format, or one split of a Hugging Face dataset."""

    path: Path | None
    format: str
    hf_split: str = ""  # only for format 'hf'


def resolve_inputs(cfg: CorpusConfig) -> list[Source]:
    """Expand ``cfg.inputs`` (files, directories, globs, pkg://) or the HF dataset into sources.

    Runs eagerly so that a missing file or an unknown extension is reported before any work.
    """
    if cfg.hf_dataset or cfg.format == "hf":
        if not cfg.hf_dataset:
            raise GlottaError("corpus.format = 'hf' needs corpus.hf_dataset (e.g. 'wiki40b')")
        if cfg.inputs:
            raise GlottaError(
                "set either corpus.inputs or corpus.hf_dataset, not both "
                f"(inputs={cfg.inputs}, hf_dataset={cfg.hf_dataset!r})"
            )
        return [Source(None, "hf", split) for split in cfg.hf_splits]
    if not cfg.inputs:
        raise GlottaError("corpus.inputs is empty: give files, directories or globs to read")
    sources: list[Source] = []
    seen: set[Path] = set()
    for spec in cfg.inputs:
        for path in _expand(spec):
            if path not in seen:  # overlapping globs must not read a file twice
                seen.add(path)
                sources.append(Source(path, _detect_format(path, cfg.format)))
    return sources


def _expand(spec: str) -> list[Path]:
    """Files named by one entry of corpus.inputs, in a stable (sorted) order."""
    pattern = spec
    if spec.startswith("pkg://"):
        pattern = _package_pattern(spec)
    pattern = os.path.expanduser(pattern)
    if re.search(r"[*?[]", pattern):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not files:
            raise GlottaError(f"corpus.inputs: {spec!r} matches no files")
        return files
    path = Path(pattern)
    if path.is_dir():
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skip .git and friends
            files.extend(Path(root, n) for n in sorted(names) if not n.startswith("."))
        if not files:
            raise GlottaError(f"corpus.inputs: directory {spec!r} contains no files")
        return files
    if path.exists():
        return [path]
    raise GlottaError(f"corpus.inputs: {spec!r} does not exist")


def _package_pattern(spec: str) -> str:
    """``pkg://PACKAGE/sub/path`` -> a path inside the installed package (its data files)."""
    package, _, rest = spec[len("pkg://") :].partition("/")
    try:
        found = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise GlottaError(
            f"corpus.inputs: {spec!r} needs the Python package '{package}', which is not "
            f"installed (pip install {package.replace('_', '-')})"
        )
    if not found.submodule_search_locations:
        raise GlottaError(f"corpus.inputs: {spec!r}: '{package}' is a module, not a package")
    root = list(found.submodule_search_locations)[0]
    return os.path.join(root, rest) if rest else root


def split_compression(path: Path) -> tuple[str, str]:
    """Return (format suffix, compression suffix), e.g. ('.jsonl', '.zst') for a.jsonl.zst."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES else ""
    if compression:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), compression


def _detect_format(path: Path, configured: str) -> str:
    fmt_suffix, compression = split_compression(path)
    fmt = configured if configured != "auto" else FORMAT_BY_SUFFIX.get(fmt_suffix)
    if fmt is None:
        raise GlottaError(
            f"cannot tell the format of {path} from its extension ({fmt_suffix or 'none'}); "
            "set corpus.format to txt, jsonl, parquet, tsv, wikipedia or cirrus"
        )
    if fmt == "parquet" and compression:
        # Parquet compresses internally and needs random access, which a .gz stream lacks.
        raise GlottaError(f"{path}: decompress Parquet files first (they are compressed inside)")
    return fmt


def open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, decompressing .gz/.bz2/.zst on the fly."""
    compression = split_compression(path)[1]
    if compression == ".gz":
        return gzip.open(path, "rb")
    if compression == ".bz2":
        return bz2.open(path, "rb")
    if compression in (".zst", ".zstd"):
        return io.BufferedReader(_ZstdRaw(open(path, "rb")), buffer_size=1 << 16)
    return open(path, "rb", buffering=1 << 20)


class _ZstdRaw(io.RawIOBase):
    """Streaming zstd decompression that notices truncation.

    zstandard's own ``stream_reader`` ends silently in the middle of a cut-off frame, which would
    turn a half-downloaded file into a silently smaller corpus; ``decompressobj`` exposes ``eof``.
    It has no output limit, so it is fed small chunks: memory per step is the chunk times the
    compression ratio (under 1 MB for text). Handles several concatenated frames (``cat a b``).
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._out:
            chunk = self._raw.read(1 << 13)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ended before the end of its frame")
                return 0
            self._out = memoryview(self._decompress(chunk))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        parts = []
        while data:
            parts.append(self._obj.decompress(data))
            self._in_frame = not self._obj.eof
            data = b""
            if self._obj.eof:  # a new frame may follow in the same file
                data = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        self._raw.close()
        super().close()
